"""The docs cannot drift: every ``$ vdecode …`` example in README.md and docs/*.md prints what the
page shows, and every option ``--help`` lists is documented.

The examples run from a scratch copy of the checkout's layout (tools/doc_examples.py); after a
change of output, ``.venv/bin/python tools/doc_examples.py update`` rewrites the pages (review the
diff). Examples on the shared captures skip without them.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import doc_examples  # noqa: E402  (tools/ is not a package)

from tests.conftest import NO_CAPTURES  # noqa: E402
from vdecode.cli import cli  # noqa: E402

EXAMPLES = [ex for page in doc_examples.pages() for ex in doc_examples.examples(page)]


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    folder = doc_examples.scratch(tmp_path_factory.mktemp("docs"))
    yield folder
    shutil.rmtree(folder.parent, ignore_errors=True)   # its cache holds decompressed dumps


def test_the_pages_have_examples():
    # the finder itself can fail: a page format change must not turn this test into a no-op
    assert len(EXAMPLES) >= 8
    assert {ex.page.name for ex in EXAMPLES} >= {"info.md", "log.md", "view.md", "qmp.md", "bundle.md",
                                                  "triage.md", "cache.md"}


@pytest.mark.parametrize("ex", EXAMPLES, ids=[f"{e.page.name}:{e.line}" for e in EXAMPLES])
def test_example_prints_what_the_page_shows(ex, cwd):
    if doc_examples.needs_shared(ex) and not doc_examples.have_shared():
        pytest.skip(NO_CAPTURES)
    got = doc_examples.run(ex, cwd)
    shown = list(ex.output)
    assert (got[:len(shown)] if ex.cut else got) == shown, (
        f"{ex.page.relative_to(REPO)}:{ex.line} `{ex.command}` prints something else now: "
        "run .venv/bin/python tools/doc_examples.py update and review the diff")


def commands() -> list[tuple[str, object]]:
    out = [("(group)", cli)]
    for name, cmd in cli.commands.items():
        if not getattr(cmd, "hidden", False):
            out.append((name, cmd))
    return out


def documented_text() -> str:
    return "\n".join(p.read_text() for p in doc_examples.pages())


@pytest.mark.parametrize("name,cmd", commands(), ids=[n for n, _ in commands()])
def test_every_option_is_documented(name, cmd):
    docs = documented_text()
    missing = []
    for param in getattr(cmd, "params", []):
        if getattr(param, "hidden", False) or not getattr(param, "opts", None):
            continue
        if not any(o.startswith("-") for o in param.opts):
            continue
        if not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", docs) for o in param.opts):
            missing.append("/".join(param.opts))
    assert missing == [], f"vdecode {name}: options in --help that no page documents: {missing}"


def test_help_runs():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_cache_dir_help_says_what_the_docs_say():
    # the default folder, in --help of every command that takes --cache-dir and on the pages
    chain = "$VDECODE_CACHE, else $XDG_CACHE_HOME/vdecode, else ~/.cache/vdecode"
    for page in ("info.md", "cache.md", "triage.md"):
        text = " ".join((REPO / "docs" / page).read_text().replace("`", "").split())
        assert chain in text, page
    groups = [cli, cli.commands["cache"]]
    helps = {f"{name}": " ".join(p.help.split()) for g in groups for name, cmd in g.commands.items()
             for p in getattr(cmd, "params", []) if "--cache-dir" in getattr(p, "opts", ())}
    assert len(helps) >= 7 and all(chain in h for h in helps.values()), helps


def test_the_api_page_script_prints_what_the_page_shows():
    """docs/api.md's worked example (a ```python block, then "prints" and a ```text block) run
    as a reader would run it, from the repository's root with this vdecode first on PATH."""
    import os
    import subprocess

    page = (REPO / "docs" / "api.md").read_text()
    found = re.search(r"```python\n(.*?)```\n\nprints\n\n```text\n(.*?)```\n", page, re.S)
    assert found, "docs/api.md: no ```python example followed by its output"
    script, shown = found.groups()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    got = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    assert got.stdout == shown, "docs/api.md: the worked example prints something else now"

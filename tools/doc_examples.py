#!/usr/bin/env python3
"""The command examples of README.md and docs/*.md: find them, run them, compare or rewrite them.

usage: doc_examples.py check|update [PAGE.md...]

An example is a fenced block (```text or ```console) whose first line is ``$ COMMAND``; the lines
after it, up to the next ``$`` line or the fence, are what the command prints (stdout, then
stderr). A last line ``...`` means "the output goes on": only the lines above it are compared.
Commands run through bash from a scratch copy of the checkout's layout (``samples``, ``tests``,
``formats`` and ``docs`` linked in, the shared captures as ``../shared``), with the ``vdecode`` of
the Python running this first on PATH, so examples name files as a user in the repository root
would (``samples/basic-core.vdb``, ``../shared/captures/basic/dump.elf.zst``) and files they write
land in the scratch folder. Timestamps that change from run to run are fixed by SOURCE_DATE_EPOCH;
the cache folder is printed as ``$VDECODE_CACHE`` and a cached file as ``KEY-NAME``.

``update`` rewrites each example's output with what the command prints now (keeping a ``...``
cut at the same length); ``check`` lists the examples whose output differs. tests/test_docs.py
runs ``check`` on every page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAPTURES = Path(os.environ.get("VDECODE_CAPTURES", REPO.parent / "shared" / "captures"))
#: the folder linked as ``../shared`` (examples name ``../shared/captures/...``)
SHARED = CAPTURES.parent


def have_shared() -> bool:
    """Whether examples on the shared captures can run: the captures folder itself, not only its
    parent (``VDECODE_CAPTURES=/nonexistent`` has the parent ``/``)."""
    return CAPTURES.is_dir()
FENCE = re.compile(r"^```(text|console)\s*$")
MORE = "..."


@dataclass(frozen=True)
class Example:
    page: Path
    line: int               # 1-based line of the ``$`` line
    command: str
    output: tuple[str, ...]  # as the page shows it, without a trailing ``...``
    cut: bool                # the page shows only the first lines


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def examples(page: Path) -> list[Example]:
    lines = page.read_text().splitlines()
    out: list[Example] = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]) and i + 1 < len(lines) and lines[i + 1].startswith("$ "):
            j = i + 1
            while j < len(lines) and lines[j] != "```":
                cmd_at, cmd = j, lines[j][2:]
                j += 1
                body = []
                while j < len(lines) and lines[j] != "```" and not lines[j].startswith("$ "):
                    body.append(lines[j])
                    j += 1
                cut = bool(body) and body[-1] == MORE
                out.append(Example(page, cmd_at + 1, cmd, tuple(body[:-1] if cut else body), cut))
            i = j
        i += 1
    return out


def needs_shared(ex: Example) -> bool:
    return "../shared/" in ex.command


def scratch(parent: Path | None = None) -> Path:
    """A folder laid out like the checkout's root, for commands to run and write in (made in
    ``parent``, else in the temp folder; the caller removes it: ``scratch(...).parent``)."""
    root = Path(tempfile.mkdtemp(prefix="vdecode-docs-", dir=parent))
    main = root / "main"
    main.mkdir()
    for name in ("samples", "tests", "formats", "docs"):
        (main / name).symlink_to(REPO / name)
    if have_shared():
        (root / "shared").symlink_to(SHARED)
    (main / ".cache").mkdir()
    return main


def run(ex: Example, cwd: Path) -> list[str]:
    bindir = str(Path(sys.executable).parent)
    cache = cwd / ".cache"
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(cwd), "LC_ALL": "C.UTF-8", "COLUMNS": "100",
           "VDECODE_CACHE": str(cache), "SOURCE_DATE_EPOCH": "1795573446", "TZ": "UTC"}
    r = subprocess.run(["bash", "-c", ex.command], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    text = (r.stdout + r.stderr).replace(str(cache), "$VDECODE_CACHE")
    # a cached file's name starts with a digest of the input's content: shown as KEY, which reads
    # better and does not change when a fixture is re-recorded
    text = re.sub(r"\$VDECODE_CACHE/[0-9a-f]{16}-", "$VDECODE_CACHE/KEY-", text)
    return text.rstrip("\n").splitlines() if text.strip() else []


def differs(ex: Example, got: list[str]) -> bool:
    shown = list(ex.output)
    return (got[:len(shown)] if ex.cut else got) != shown


def update(page: Path, cwd: Path) -> int:
    lines = page.read_text().splitlines()
    changed = 0
    # run in page order, as check does (an example may use what an earlier one made or cached),
    # then rewrite from the bottom, so earlier line numbers hold
    ran = [(ex, run(ex, cwd)) for ex in examples(page) if not (needs_shared(ex) and not have_shared())]
    for ex, got in reversed(ran):
        if not differs(ex, got):
            continue
        new = got[:len(ex.output)] + [MORE] if ex.cut else got
        start = ex.line                          # first output line (0-based index)
        end = start + len(ex.output) + (1 if ex.cut else 0)
        lines[start:end] = new
        changed += 1
    if changed:
        page.write_text("\n".join(lines) + "\n")
    return changed


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("check", "update"):
        sys.exit(__doc__)
    chosen = [Path(p).resolve() for p in sys.argv[2:]] or pages()
    cwd = scratch()
    try:
        return _check_or_update(chosen, cwd)
    finally:
        shutil.rmtree(cwd.parent, ignore_errors=True)      # decompressed dumps: nothing left behind


def _check_or_update(chosen: list[Path], cwd: Path) -> int:
    bad = 0
    for page in chosen:
        if sys.argv[1] == "update":
            n = update(page, cwd)
            print(f"{page.relative_to(REPO)}: {n} examples rewritten")
            continue
        for ex in examples(page):
            if needs_shared(ex) and not have_shared():
                continue
            if differs(ex, run(ex, cwd)):
                print(f"{page.relative_to(REPO)}:{ex.line}: output of `{ex.command}` differs")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Text that fits the terminal: the view's findings, ``info`` and ``log`` within 80 columns piped
and within ``$COLUMNS`` when it is set, wrapped at word boundaries with a hanging indent and
never inside a phrase; ``info`` on a bundle without Python reprs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from vdecode.cli import cli
from vdecode.render.wrapping import phrases, wrap_hanging, wrap_units

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "tests" / "data" / "captures"


def unpack(src: Path, dst: Path) -> Path:
    with open(src, "rb") as f, open(dst, "wb") as out:
        zstandard.ZstdDecompressor().copy_stream(f, out)
    return dst


def invoke(args: list[str], columns: int | None) -> str:
    env = {"COLUMNS": None if columns is None else str(columns)}
    r = CliRunner().invoke(cli, args, env=env)
    assert r.exit_code == 0, r.output
    return r.output


def over(text: str, width: int) -> list[str]:
    """Lines past ``width`` that are not one unbreakable token after their indent."""
    return [line for line in text.splitlines()
            if len(line) > width and len(line.split()) > 1]


# --- the layout itself -------------------------------------------------------------------------

def test_a_phrase_is_never_cut():
    text = "40005 completion(s) since the log (used idx 30005 -> 4474)"
    for width in range(36, 90):          # from where the parenthesis fits under the hang
        lines = wrap_hanging(text, width, 2, 10)
        assert all(len(line) <= width for line in lines), (width, lines)
        # the parenthesis is on one line, and nothing but it follows a break inside it
        assert sum("(used idx 30005 -> 4474)" in line for line in lines) == 1, (width, lines)
        assert all(line.startswith(" " * 10) and not line.startswith(" " * 11)
                   for line in lines[1:]), (width, lines)


def test_a_phrase_longer_than_a_line_breaks_at_its_words():
    lines = wrap_units(["x:", "(a b c d e f g h i j k l)"], 12, 0, 2)
    assert all(len(line) <= 12 for line in lines), lines
    assert " ".join(" ".join(lines).split()) == "x: (a b c d e f g h i j k l)"


def test_arrows_and_brackets_are_units():
    assert phrases("idx 1 -> 2 ok {14 members} [7 items] (a (b) c)") == [
        "idx", "1 -> 2", "ok", "{14 members}", "[7 items]", "(a (b) c)"]


# --- the view's findings -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wrap_bundle(tmp_path_factory):
    return unpack(CAPTURES / "wrap" / "elf+early.vdb.zst",
                  tmp_path_factory.mktemp("wrap") / "elf+early.vdb")


@pytest.mark.parametrize("extra", [[], ["-v", "--queue", "0"]])
def test_view_findings_wrap_with_a_hanging_indent(wrap_bundle, extra):
    out = invoke([str(wrap_bundle), *extra], None)
    findings = out[out.index("Findings"):].splitlines()
    assert all(len(line) <= 80 for line in out.splitlines())
    # the 40005-completions finding does not fit in 80 columns: its parenthesis goes whole to a
    # continuation line under the title (it used to be cut as "(used idx" / "30005 -> 4474)")
    i = next(i for i, line in enumerate(findings) if "40005 completion(s)" in line)
    assert findings[i + 1] == "          (used idx 30005 -> 4474, wrapped)"
    for line in findings:
        assert line.count("(") == line.count(")"), line


# --- info ---------------------------------------------------------------------------------------

REPRS = re.compile(r"\{'|'\}|=False|=True|\bTrue\b|\bFalse\b|\bNone\b")


@pytest.fixture(scope="module")
def core_bundle(tmp_path_factory):
    return unpack(CAPTURES / "wrap" / "qemu-core+none.vdb.zst",
                  tmp_path_factory.mktemp("core") / "qemu-core+none.vdb")


@pytest.mark.parametrize("columns", [None, 120])
def test_info_on_a_bundle_reads_like_info_on_a_dump(core_bundle, columns):
    width = columns or 80
    for path in (REPO / "samples" / "basic-core.vdb", REPO / "samples" / "mixed-elf-early.vdb",
                 core_bundle):
        out = invoke(["info", str(path)], columns)
        assert not REPRS.search(out), out
        assert over(out, width) == []
        lines = out.splitlines()
        assert len(lines) == len(set(lines)) or all(
            line.lstrip().startswith("+") for line in lines if lines.count(line) > 1), out
        assert "origin:" in out and "kept:" in out and "QEMU state:" in out
    out = invoke(["info", str(REPO / "samples" / "basic-core.vdb")], columns)
    # virtio-serial's 61 never-used queues are counted, not listed (104 lines before)
    assert "    +61 never-used queue(s) not shown" in out
    assert "    q4 size 128  avail 128 used 0 last 0  pending 128 inflight 0" in out
    assert len(out.splitlines()) < 50


def test_info_on_a_qemu_core_fits(captures, tmp_path):
    for columns in (None, 120):
        # without its executable (where this machine has it, it gives the names' .rodata)
        out = invoke(["info", str(captures["basic"].dump("qemu-core")),
                      "--binary", str(tmp_path / "absent")], columns)
        assert over(out, columns or 80) == [], out
        assert "skipped:" in out and "names from the profile's table" in out


# --- log ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("columns", [None, 120])
def test_log_follows_the_width_and_keeps_error_texts(columns):
    width = columns or 80
    for name in ("samples/basic-early.jsonl", "tests/data/logs/hand/trace-iso.log"):
        out = invoke(["log", str(REPO / name)], columns)
        assert over(out, width) == [], out
    out = invoke(["log", str(REPO / "tests/data/logs/hand/trace-iso.log")], columns)
    # an error reply's text is whole, however narrow (it used to be cut at 160 columns)
    assert "GenericError: No such device" in " ".join(out.split())
    wide = invoke(["log", str(REPO / "samples/basic-early.jsonl")], 200)
    assert max(map(len, wide.splitlines())) > 120           # the width is followed, not fixed

"""The plain ``vdecode DUMP [--queue N]`` form runs without click (vdecode.entry), and gives what
the click command line gives: each command line below runs both ways, in a subprocess on the
real samples copied into tmp_path, and the status, stdout and stderr must be the same; the plain
ones must not have imported click or construct."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from vdecode import command_line, entry
from vdecode.cli import _run, cli


def test_commands_are_the_click_groups():
    # a first argument naming a command is that command, never a dump
    assert entry.COMMANDS == set(cli.commands)


@pytest.mark.parametrize("argv,quick", [
    (["d.vdb"], {"dumps": ("d.vdb",)}),
    (["d.vdb", "--queue", "0"], {"dumps": ("d.vdb",), "queue": 0}),
    (["d.vdb", "--queue", "1023", "--queue", "2", "--json"],
     {"dumps": ("d.vdb",), "queue": 2, "as_json": True}),
    (["core", "guest.elf", "--log", "a.jsonl", "--log", "b.jsonl", "--device", "virtio-net", "-v",
      "--all"], {"dumps": ("core", "guest.elf"), "logs": ("a.jsonl", "b.jsonl"),
                 "device": "virtio-net", "verbose": True, "show_all": True}),
    ([], None),
    (["info", "d.vdb"], None),                     # a command
    (["view", "d.vdb"], None),
    (["--help"], None),
    (["d.vdb", "--queue", "1024"], None),          # click words the range error
    (["d.vdb", "--queue", "-1"], None),
    (["d.vdb", "--queue", "٣"], None),             # a digit, not an ASCII one
    (["d.vdb", "--queue=0"], None),
    (["d.vdb", "--queue"], None),
    (["d.vdb", "--log", "--json"], None),
    (["d.vdb", "--log", ""], None),
    (["d.vdb", "--qemu", "7.2"], None),            # any other option
    (["d.vdb", "--"], None),
    (["d.vdb", "-"], None),
])
def test_quick_reads_only_the_plain_form(argv, quick):
    got = entry.quick_view_args(argv)
    if quick is None:
        assert got is None
    else:
        assert got == {"dumps": (), "logs": (), "device": None, "queue": None, "as_json": False,
                       "show_all": False, "verbose": False, **quick}


def test_a_folder_goes_to_click(tmp_path):
    assert entry.quick_view_args([str(tmp_path)]) is None
    assert entry.quick_view_args(["d.vdb", "--log", str(tmp_path)]) is None


# The prelude runs the installed entry point's code; "click" forces the click command line (the
# plain form refused), and the modules loaded are written to a file at exit.
PRELUDE = """
import atexit, json, sys
from vdecode import entry
if {click!r}:
    entry.quick_view_args = lambda argv: None
def _loaded():
    with open({out!r}, "w") as f:
        json.dump(sorted({{m.split(".")[0] for m in sys.modules}} & {{"click", "construct"}}), f)
atexit.register(_loaded)
sys.argv = ["vdecode", *{args!r}]
entry.console_main()
"""


def run(work: Path, args: list[str], click: bool) -> tuple[int, str, str, list[str]]:
    out = work / f"loaded-{click}.json"
    env = {**os.environ, "VDECODE_CACHE": str(work / ".cache"), "COLUMNS": "120"}
    r = subprocess.run([sys.executable, "-c", PRELUDE.format(click=click, out=str(out),
                                                             args=args)],
                       cwd=work, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr, json.loads(out.read_text())


CASES = [
    (["in.vdb", "--queue", "0"], True),
    (["in.vdb"], True),
    (["in.vdb", "--json", "--queue", "0"], True),
    (["in.vdb", "--log", "in.jsonl", "--device", "virtio-net", "-v", "--all"], True),
    (["in.vdb", "--queue", "1023"], True),                  # no such queue: status 3
    (["in.vdb", "--device", "nothing"], True),
    (["missing.vdb"], True),
    (["in.vdb", "--log", "in.vdb"], True),                  # not a log
    (["in.vdb", "--queue", "1024"], False),                 # click's range error, status 2
    (["in.vdb", "--queue"], False),
    (["in.vdb", "--bogus"], False),
    (["folder"], False),
    (["in.vdb", "--queue=0"], False),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("entry")
    shutil.copy(REPO / "samples" / "basic-core.vdb", root / "in.vdb")
    shutil.copy(REPO / "samples" / "basic-early.jsonl", root / "in.jsonl")
    (root / "folder").mkdir()
    return root


@pytest.mark.parametrize("args,plain", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_both_ways_give_the_same(work, args, plain):
    quick = run(work, args, click=False)
    slow = run(work, args, click=True)
    assert quick[:3] == slow[:3]
    assert "Traceback" not in quick[2]
    assert slow[3] == ["click"]
    assert quick[3] == ([] if plain else ["click"])


@pytest.mark.parametrize("raised,status,stderr", [
    (KeyboardInterrupt(), 130, "\nvdecode: aborted\n"),
    (EOFError(), 130, "\nvdecode: aborted\n"),
    (BrokenPipeError(32, "Broken pipe"), SystemExit, ""),
])
def test_interrupts_and_closed_pipes_end_as_under_click(monkeypatch, capsys, raised, status,
                                                        stderr):
    def interrupted(*args, **kwargs):
        raise raised

    monkeypatch.setattr(entry, "run_view", interrupted)          # the plain form's
    monkeypatch.setattr(command_line, "run_view", interrupted)   # click's view command's
    monkeypatch.setattr(sys, "argv", ["vdecode", "d.vdb"])
    got = []
    for how in (lambda: entry._quick(entry.quick_view_args(["d.vdb"])), _run):
        monkeypatch.setattr(sys, "stdout", sys.stdout)     # both may pacify the streams
        monkeypatch.setattr(sys, "stderr", sys.stderr)
        try:
            code = how()
        except SystemExit as exit_:
            code = (SystemExit, exit_.code)
        got.append((code, capsys.readouterr().err))
    assert got[0] == got[1]
    assert got[0][1] == stderr
    assert got[0][0] == (status if status is not SystemExit else (SystemExit, 1))

"""Every error path around the main one is one line and a documented status (issue 24): output
paths, a queue or device the input does not have, numbers out of range, triage's files that are
no input and paths with nothing to triage, Dask without its extra or without a scheduler.

Each case runs the real command line (``python -m vdecode``, the installed entry point's code) in
a subprocess, on the real samples (bundles of real QEMU 7.2 captures) copied into tmp_path, and
checks the status, that stderr is exactly one ``vdecode: error:`` line naming the problem, and
that no traceback leaked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from vdecode.errors import InputError, NotInInput, OutputError, SetupError

SAMPLE = REPO / "samples" / "basic-core.vdb"
SAMPLE_LOG = REPO / "samples" / "basic-early.jsonl"


def vdecode(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    """``vdecode ARGS`` in ``cwd``; ``code`` runs first in the same interpreter (to simulate an
    install without an extra)."""
    prelude = (code or "") + "\nimport sys\nfrom vdecode.cli import console_main\n" \
                             f"sys.argv = ['vdecode', *{list(args)!r}]\nconsole_main()\n"
    env = {**os.environ, "VDECODE_CACHE": str(cwd / ".cache"), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-c", prelude], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def one_line_error(r: subprocess.CompletedProcess, status: int, *words: str) -> str:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == status, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vdecode: error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def work(tmp_path) -> Path:
    shutil.copy(SAMPLE, tmp_path / "in.vdb")
    return tmp_path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_statuses_are_the_documented_ones():
    # errors.py's table; docs/triage.md and docs/view.md name them
    assert (OutputError.exit_status, InputError.exit_status, NotInInput.exit_status,
            SetupError.exit_status) == (2, 2, 3, 6)
    assert issubclass(NotInInput, InputError)


# --- output paths -------------------------------------------------------------------------------


def test_bundle_into_a_missing_folder(work):
    r = vdecode("bundle", "in.vdb", "-o", "no/such/dir/x.vdb", cwd=work)
    one_line_error(r, 2, "no/such/dir/x.vdb", "the folder no/such/dir does not exist")
    assert not (work / "no").exists()


def test_bundle_onto_its_input_leaves_the_input_alone(work):
    before = digest(work / "in.vdb")
    r = vdecode("bundle", "in.vdb", "-o", "./in.vdb", cwd=work)
    one_line_error(r, 2, "it is an input (in.vdb)")
    assert digest(work / "in.vdb") == before
    (work / "same.vdb").symlink_to(work / "in.vdb")          # another name, the same file
    one_line_error(vdecode("bundle", "in.vdb", "-o", "same.vdb", cwd=work), 2, "it is an input")
    assert digest(work / "in.vdb") == before


def test_bundle_onto_a_folder_or_under_a_file(work):
    (work / "out").mkdir()
    one_line_error(vdecode("bundle", "in.vdb", "-o", "out", cwd=work), 2, "out", "directory")
    one_line_error(vdecode("bundle", "in.vdb", "-o", "in.vdb/x.vdb", cwd=work), 2,
                   "in.vdb is a file, not a folder")


def test_bundle_where_nothing_may_be_written(work):
    if os.geteuid() == 0:
        # root passes every permission check: /proc refuses new files to everybody, so the
        # write itself fails, which the writer reports the same way (and leaves no file)
        out = "/proc/vdecode-test.vdb"
        one_line_error(vdecode("bundle", "in.vdb", "-o", out, cwd=work), 2,
                       out, "cannot write the bundle")
        return
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line_error(vdecode("bundle", "in.vdb", "-o", "ro/x.vdb", cwd=work), 2,
                       "ro/x.vdb", "permission denied")
    finally:
        ro.chmod(0o700)


def test_profile_output_is_checked_before_reading_dwarf(work):
    one_line_error(vdecode("profile", "in.vdb", "-o", "nowhere/layout.json", cwd=work), 2,
                   "nowhere/layout.json", "cannot write the profile (-o)", "does not exist")
    one_line_error(vdecode("profile", "in.vdb", "-o", "in.vdb", cwd=work), 2, "it is an input")


def test_qmp_socket_paths(work):
    before = digest(work / "in.vdb")
    # the socket path was unlinked before bind: naming the dump there deleted it
    one_line_error(vdecode("qmp", "in.vdb", "--socket", "in.vdb", cwd=work), 2, "it is an input")
    assert digest(work / "in.vdb") == before
    (work / "notes.txt").write_text("mine\n")
    one_line_error(vdecode("qmp", "in.vdb", "--socket", "notes.txt", cwd=work), 2,
                   "not a socket; not replacing it")
    assert (work / "notes.txt").read_text() == "mine\n"
    one_line_error(vdecode("qmp", "in.vdb", "--socket", "gone/qmp.sock", cwd=work), 2,
                   "the folder gone does not exist")
    one_line_error(vdecode("qmp", "in.vdb", "--socket", "s" * 120, cwd=work), 2,
                   "120 bytes long")


# --- queues, devices and numbers --------------------------------------------------------------


def test_a_queue_no_device_has_is_status_3_listing_the_queues(work):
    for extra in ((), ("--json",)):
        r = vdecode("in.vdb", "--queue", "99", *extra, cwd=work)
        line = one_line_error(r, 3, "--queue: no device has queue 99",
                              "/machine/peripheral-anon/device[0] (virtio-blk) 0",
                              "(virtio-serial) 0-63", "/machine/peripheral/scsi0 (virtio-scsi) 0-2")
        assert r.stdout == ""                        # no body that looks like an answer
    assert "Findings" not in line
    one_line_error(vdecode("in.vdb", "--device", "scsi0", "--queue", "5", cwd=work), 3,
                   "no selected device has queue 5; queues: /machine/peripheral/scsi0 "
                   "(virtio-scsi) 0-2")
    one_line_error(vdecode("in.vdb", "--device", "nosuch", cwd=work), 3,
                   "--device: no device matches 'nosuch'")
    r = vdecode("in.vdb", "--queue", "63", "--device", "virtio-serial", cwd=work)
    assert r.returncode == 0 and "q63" in r.stdout, r.stderr     # the last one is there


@pytest.mark.parametrize("value", ["-1", "1024", "70000", "two"])
def test_queue_numbers_out_of_range_are_refused_by_the_parser(work, value):
    r = vdecode("in.vdb", "--queue", value, cwd=work)
    one_line_error(r, 2, "'--queue'", value, "see 'vdecode view --help'")


def test_other_numbers_are_checked_by_the_parser(work):
    one_line_error(vdecode("triage", "in.vdb", "--workers", "0", cwd=work), 2, "--workers")
    one_line_error(vdecode("triage", "in.vdb", "--timeout", "0", cwd=work), 2, "--timeout")
    one_line_error(vdecode("qmp", "in.vdb", "--connections", "0", cwd=work), 2, "--connections")


# --- triage ---------------------------------------------------------------------------------------


def test_triage_lists_every_file_it_could_not_recognise(tmp_path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    shutil.copy(SAMPLE, fleet / "web1.vdb")
    (fleet / "blob.bin").write_bytes(bytes(range(256)) * 40)
    (fleet / "notes.txt").write_text("web1 crashed at 03:00, see ticket 4711\n")
    (fleet / "zero").write_bytes(b"")
    (fleet / "extra.json").write_text('{"not": "a log"}\n')
    r = vdecode("triage", "fleet", "--json", "--workers", "1", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    records = {x["vm"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert sorted(records) == ["blob.bin", "extra.json", "notes.txt", "web1", "zero"]
    assert records["web1"]["verdict"] == "ok"
    why = {vm: (x["verdict"], x["errors"][0]["message"]) for vm, x in records.items() if vm != "web1"}
    assert why == {
        "blob.bin": ("unrecognised", "fleet/blob.bin: binary, not a dump, QEMU core, bundle or QMP "
                                     "log (no magic this tool reads; starts with "
                                     "00 01 02 03 04 05 06 07)"),
        "notes.txt": ("unrecognised",
                      "fleet/notes.txt: text, not a QMP log in any format this tool reads"),
        "zero": ("unrecognised", "fleet/zero: empty file"),
        "extra.json": ("unrecognised", why["extra.json"][1]),
    }
    assert why["extra.json"][1].startswith("fleet/extra.json: JSON, not a QMP log")
    csv = vdecode("triage", "fleet", "--csv", "--workers", "1", cwd=tmp_path).stdout.splitlines()
    assert len(csv) == 6 and any(row.startswith("zero,unrecognised,") for row in csv)
    table = vdecode("triage", "fleet", "--workers", "1", cwd=tmp_path).stdout
    for name in ("blob.bin", "notes.txt", "zero", "extra.json", "empty file"):
        assert name in table
    assert table.rstrip().endswith("1 VMs: 1 ok; 0 with unreadable inputs; "
                                   "4 file(s) not recognised")


def test_triage_with_nothing_to_triage_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(vdecode("triage", "empty", cwd=tmp_path), 2,
                   "empty: nothing to triage: an empty folder")
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(SAMPLE_LOG, logs / "web1.qmp.jsonl")
    (logs / "notes.txt").write_text("nothing here\n")
    one_line_error(vdecode("triage", "logs", cwd=tmp_path), 2,
                   "no dump, QEMU core or bundle to triage, only 1 QMP log(s) (web1.qmp.jsonl)",
                   "notes.txt: text, not a QMP log")
    one_line_error(vdecode("triage", "nosuch.elf", cwd=tmp_path), 2,
                   "nosuch.elf: no such file or directory")


def test_triage_on_a_cut_real_bundle_is_a_record_not_an_error(tmp_path):
    data = SAMPLE.read_bytes()
    (tmp_path / "cut.vdb").write_bytes(data[:len(data) // 2])
    r = vdecode("triage", "cut.vdb", "--json", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    (rec,) = map(json.loads, r.stdout.splitlines())
    # cut inside its guest RAM: it opens and says so (issue 24, absent is stated)
    assert rec["verdict"] == "incomplete" and rec["errors"] == []
    assert rec["absent"]["incomplete"] and rec["absent"]["kinds"] == ["cut-short"]


DASK_MISSING = "import sys\nsys.modules['distributed'] = None   # as without the extra\n"


def test_triage_on_dask_without_the_extra(work):
    r = vdecode("triage", "in.vdb", "--scheduler", "tcp://127.0.0.1:8786", cwd=work,
                code=DASK_MISSING)
    one_line_error(r, 6, "--scheduler tcp://127.0.0.1:8786", "Dask is not installed",
                   "pip install 'vdecode[dask]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_triage_on_a_scheduler_that_does_not_answer(work):
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{_free_port()}"      # loopback only: nothing listens there
    start = time.monotonic()
    r = vdecode("triage", "in.vdb", "--scheduler", address, "--timeout", "1", cwd=work)
    took = time.monotonic() - start
    one_line_error(r, 6, f"--scheduler {address}", "no Dask scheduler answered within 1 s")
    assert took < 20, took                           # not distributed's 30 s


def test_triage_scheduler_timeout_defaults_to_10_s():
    from vdecode.cli import triage_command

    (opt,) = [p for p in triage_command.params if p.name == "timeout"]
    assert opt.default == 10.0


def test_triage_says_why_a_file_named_on_the_command_line_is_left_out(tmp_path):
    # found in a folder, a capture's case.json is passed over; named by the user, it is reported
    shutil.copy(SAMPLE, tmp_path / "web1.vdb")
    (tmp_path / "case.json").write_text("{}\n")
    r = vdecode("triage", "web1.vdb", "case.json", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = {x["vm"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert records["case.json"]["verdict"] == "unrecognised"
    assert "capture layout" in records["case.json"]["errors"][0]["message"]
    r = vdecode("triage", ".", "--json", cwd=tmp_path)
    assert [x["vm"] for x in map(json.loads, r.stdout.splitlines())] == ["web1"]

"""``vdecode log FILE [--vm] [--log-format] [--json]``: the captures round-trip, any format converts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vdecode.cli import cli
from vdecode.sources.qmp_log import read_qmp_log

DATA = Path(__file__).resolve().parent.parent / "data" / "logs"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vdecode", *args], capture_output=True, text=True)


@pytest.mark.parametrize("kind", ["early", "instant"])
def test_capture_transcripts_round_trip(capture, kind):
    path = capture.log(kind)
    r = CliRunner().invoke(cli, ["log", "--json", str(path)])
    assert r.exit_code == 0, r.output
    # same messages, same order, same times, same key order: the very same bytes
    assert r.stdout == path.read_text()
    assert r.stderr == ""


@pytest.mark.parametrize("name", ["real/qemu-trace.log", "real/qmp-shell.txt", "real/socat-pretty.txt",
                                  "real/virsh-pretty.txt", "hand/arrows.txt", "hand/kubevirt.log",
                                  "real/qemu-qmp-debug.log", "hand/libvirt-paste.log"])
def test_any_format_converts_and_reads_back_the_same(tmp_path, name):
    r = CliRunner().invoke(cli, ["log", "--json", "--vm", "all", str(DATA / name)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "converted.jsonl"
    out.write_text(r.stdout)
    a, b = read_qmp_log(DATA / name), read_qmp_log(out)
    assert b.format == "jsonl" and b.warnings == []

    def facts(log):
        return [(m.greeting, [(x.request, x.reply, x.t, x.t_reply) for x in m.exchanges],
                 [(e.raw, e.t_log) for e in m.events]) for m in log.monitors]
    assert facts(b) == facts(a)


def test_json_of_a_several_vm_log_needs_vm():
    p = DATA / "real" / "libvirtd.log"
    r = run("log", "--json", str(p))
    assert r.returncode == 8 - 6 and r.stdout == ""
    assert r.stderr == (
        f"vdecode: error: {p}: 2 VMs in this log, choose one with --vm (or --vm all): "
        "vd-guest1 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0001 (monitor 0x7fc054007740, 20 exchanges, 6 events); "
        "vd-guest2 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0002 (monitor 0x7fc054007d00, 7 exchanges, 2 events); "
        "vd-guest1 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0001 (monitor 0x7fc070006180, 7 exchanges, 2 events)\n")
    r = CliRunner().invoke(cli, ["log", "--json", "--vm", "vd-guest2", str(p)])
    recs = [json.loads(line) for line in r.output.splitlines()]
    assert recs[0] == {"t": 1795576040.448, "dir": "->",
                       "msg": {"execute": "qmp_capabilities", "id": "libvirt-1"}}
    assert {"mon", "vm"}.isdisjoint(recs[0])          # one monitor: the captures' own shape


def test_text_view():
    p = DATA / "hand" / "trace-iso.log"
    r = CliRunner().invoke(cli, ["log", str(p)], env={"COLUMNS": "160"})   # one line per exchange
    assert r.exit_code == 0
    assert r.output == f"""log: {p}
format: trace
monitors: 1

monitor 0x55f93a4375d0 (2 exchanges, 0 events)
  time: 2022-10-14 12:25:59.529 .. 2025-07-21 18:43:28.090 UTC
  virtio devices seen: 0
  traffic:
    2022-10-14 12:25:59.529  qmp_capabilities enable=["oob"]  -> ok {{0 members}}
    2025-07-21 18:43:28.089  x-query-virtio-status path=/machine/peripheral-anon/device[1]/virtio-backend  -> error GenericError: No such device
"""


def test_text_view_of_a_real_capture_names_qemu_and_devices(captures):
    r = CliRunner().invoke(cli, ["log", str(captures["basic"].log("early"))])
    lines = r.output.splitlines()
    assert lines[1:6] == ["format: jsonl", "monitors: 1", "",
                          "monitor (unnamed) (104 exchanges, 1 events)",
                          "  QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"]
    assert "  virtio devices seen: 7" in lines
    assert any(line.startswith("    virtio-net       /machine/peripheral-anon/device[1]/virtio-backend")
               for line in lines)


def test_log_format_override_and_warnings_on_stderr(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text('junk\n{"execute": "query-status"}\n{"return": {"status": "running"}}\n')
    r = run("log", "--log-format", "wire", str(p))
    assert r.returncode == 0
    assert r.stderr == f"vdecode: warning: {p} line 1: not QMP JSON, skipped: junk\n"
    assert "query-status  -> ok {1 members}" in r.stdout
    r = run("log", "--log-format", "nope", str(p))
    assert r.returncode == 2
    assert r.stderr.startswith(f"vdecode: error: {p}: unknown log format 'nope'; known: jsonl, ")

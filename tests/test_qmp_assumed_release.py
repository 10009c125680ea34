"""``vdecode qmp`` on a guest dump alone: the greeting names the release of the profile it
assumed, and stderr says it was assumed (no core or log names the release) and how to say it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.builders.elf_dump import write_elf_dump
from vdecode.profiles import load_profile

HELLO = '{"execute":"qmp_capabilities"}\n'


def qmp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vdecode", "qmp", *args], input=HELLO, text=True,
                          capture_output=True, timeout=300)


def greeting(r: subprocess.CompletedProcess) -> str:
    v = json.loads(r.stdout.splitlines()[0])["QMP"]["version"]["qemu"]
    return f"{v['major']}.{v['minor']}.{v['micro']}"


def test_a_guest_dump_alone_says_the_release_was_assumed(tmp_path):
    dump = write_elf_dump(tmp_path / "guest.elf", [(0, b"\0" * 0x10000)])
    r = qmp(str(dump))
    assert r.returncode == 0, r.stderr
    assumed = load_profile().release
    assert greeting(r) == assumed
    assert (f"vdecode: note: the greeting says QEMU {assumed}: assumed QEMU {assumed}, no core or "
            f"log names the release; give --qemu VERSION\n") in r.stderr
    told = qmp(str(dump), "--qemu", "7.2.22")
    assert greeting(told).startswith("7.2.") and "assumed" not in told.stderr


def test_the_guest_machine_type_is_said_beside_it(captures):
    # the mixed capture ran on QEMU 7.2 with -machine q35: SMBIOS says pc-q35-7.2
    r = qmp(str(captures["mixed"].dump("elf")))
    assert r.returncode == 0, r.stderr
    assumed = load_profile().release
    assert greeting(r) == assumed
    assert (f"assumed QEMU {assumed}, no core or log names the release; give --qemu VERSION (the "
            "guest's machine type pc-q35-7.2 says QEMU 7.2 or later)") in r.stderr

"""``vdecode info DUMP [--json]`` on the real capture, synthetic dumps and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from tests.builders.elf_dump import write_elf_dump
from vdecode.cli import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vdecode", *args], capture_output=True, text=True)


def test_info_text_real_capture(captures):
    path = captures["basic"].dump("elf")
    r = CliRunner().invoke(cli, ["info", str(path)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[:7] == [
        f"file:         {path}",
        "format:       elf",
        "machine:      x86_64 ELF64 little",
        "headers:      3 program headers, 2 PT_LOAD",
        "RAM:          160.2 MiB in 2 ranges, 41024 pages of 4096 bytes",
        "  0x0000000000000000-0x000000000a000000     160 MiB",
        "  0x00000000fffc0000-0x0000000100000000     256 KiB",
    ]
    assert lines[7] == "vCPUs:        1"
    assert lines[8].startswith("  0: CORE NT_PRSTATUS, QEMU CPU state  pid=1  rip=0xffffffff")
    # at 80 columns the registers go on under the vCPU, each name with its value
    assert lines[9].startswith("     rsp=0xff") and " cr3=0x" in lines[9]
    assert all(len(line) <= 80 for line in lines)
    # the guest firmware's SMBIOS tables name QEMU's machine type (-machine q35 on 7.2)
    assert lines[10:] == ["SMBIOS:       QEMU / Standard PC (Q35 + ICH9, 2009) / pc-q35-7.2",
                          "              (the guest firmware's type 1, entry point 0xf59d0)",
                          "VMCOREINFO:   absent"]


def test_info_json_real_capture(captures):
    path = captures["basic"].dump("elf")
    r = CliRunner().invoke(cli, ["info", "--json", str(path)])
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert {k: info[k] for k in ("format", "machine", "elf_class", "pages", "ram_bytes")} == {
        "format": "elf", "machine": "x86_64", "elf_class": "ELF64", "pages": 41024,
        "ram_bytes": (160 << 20) + (256 << 10)}
    assert info["ram_ranges"] == [{"start": 0, "end": 0xA000000, "size": 0xA000000},
                                  {"start": 0xFFFC0000, "end": 1 << 32, "size": 0x40000}]
    assert info["vmcoreinfo"] == {"present": False}
    assert info["vcpus"][0]["notes"] == ["CORE NT_PRSTATUS", "QEMU CPU state"]


def test_info_vmcoreinfo_and_pn_xnum(tmp_path):
    segs = [(i * 0x1000, b"x" * 16) for i in range(70_000)]
    p = write_elf_dump(tmp_path / "big.elf", segs, vcpus=2, vmcoreinfo="OSRELEASE=6.1.0-28-amd64\n")
    r = CliRunner().invoke(cli, ["info", str(p)])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert "headers:      70001 program headers (PN_XNUM), 70000 PT_LOAD" in lines
    assert "  ... 69984 more (--json lists them all)" in lines
    assert "vCPUs:        2" in lines
    assert "VMCOREINFO:   present (25 bytes), OSRELEASE=6.1.0-28-amd64" in lines
    info = json.loads(CliRunner().invoke(cli, ["info", "--json", str(p)]).output)
    assert len(info["ram_ranges"]) == 70_000 and info["vmcoreinfo"]["osrelease"] == "6.1.0-28-amd64"


def test_info_non_dump_exit_2_one_line(tmp_path):
    p = tmp_path / "README"
    p.write_text("hello\n")
    r = run("info", str(p))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"vdecode: error: {p}: not a dump this tool reads (starts with b'hello\\n')\n"


def test_info_truncated_exit_2_one_line(tmp_path):
    data = write_elf_dump(tmp_path / "ok.elf", [(0, bytes(4096))]).read_bytes()
    p = tmp_path / "cut.elf"
    p.write_bytes(data[:100])
    r = run("info", str(p))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"vdecode: error: {p} at offset 0x40: section header table (2 entries of 64 "
                        f"bytes) runs past the end of the file (100 bytes)\n")


def test_console_script_exit_keeps_output_status_and_atexit(tmp_path):
    """The installed entry point leaves without tearing the interpreter down: its output still
    arrives whole through a pipe, its status is the command's, and atexit handlers still run."""
    import subprocess
    import sys
    from pathlib import Path
    sample = Path(__file__).resolve().parent.parent / "samples" / "basic-core.vdb"
    mark = tmp_path / "atexit-ran"
    code = ("import atexit, pathlib, sys\n"
            f"atexit.register(pathlib.Path({str(mark)!r}).write_text, 'yes')\n"
            "sys.argv = ['vdecode'] + sys.argv[1:]\n"
            "from vdecode.cli import console_main\nconsole_main()\n"
            "print('not reached')\n")
    ok = subprocess.run([sys.executable, "-c", code, str(sample), "--json"], capture_output=True)
    assert ok.returncode == 0 and b"not reached" not in ok.stdout
    import json
    assert json.loads(ok.stdout)["devices"]                     # the whole document arrived
    assert mark.read_text() == "yes"
    bad = subprocess.run([sys.executable, "-m", "vdecode", str(tmp_path / "missing.elf")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("vdecode: error: ")

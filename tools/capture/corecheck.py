#!/usr/bin/env python3
"""Check a recorded QEMU process core: which notes it has, and whether the guest RAM is in it.

usage: corecheck.py CASE_DIR...
For each case (a package.py folder holding qemu.core and qemu-argv.json) prints the note types
(NT_FILE, NT_SIGINFO, NT_PRSTATUS count, ...), the core's size, the guest RAM size (-m), and the
LOAD segments at least as large as the guest RAM with how many of their bytes the file holds:
"ram in core" is yes when such a segment is fully written (FileSiz == MemSiz).
"""
import json, re, struct, sys
from pathlib import Path

NT = {1: "NT_PRSTATUS", 2: "NT_FPREGSET", 3: "NT_PRPSINFO", 6: "NT_AUXV", 0x53494749: "NT_SIGINFO",
      0x46494c45: "NT_FILE", 0x202: "NT_X86_XSTATE", 0x205: "NT_X86_XSAVE_LAYOUT"}


def mem_bytes(argv):
    m = argv[argv.index("-m") + 1]
    n, unit = re.fullmatch(r"(\d+)([KMGT]?)", m).groups()
    return int(n) << {"": 20, "K": 10, "M": 20, "G": 30, "T": 40}[unit]


def check(case: Path):
    core = case / "qemu.core"
    argv = json.loads((case / "qemu-argv.json").read_text())
    ram = mem_bytes(argv)
    with core.open("rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        if phnum == 0xFFFF:  # extended numbering: the real count is section 0's sh_info
            shoff, = struct.unpack_from("<Q", eh, 40)
            f.seek(shoff + 44)
            phnum, = struct.unpack("<I", f.read(4))
        f.seek(phoff)
        phs = [struct.unpack("<IIQQQQQQ", f.read(phentsize)[:56]) for _ in range(phnum)]
        notes = {}
        for typ, _, off, _, _, filesz, _, _ in phs:
            if typ != 4:
                continue
            f.seek(off)
            data = f.read(filesz)
            i = 0
            while i + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, i)
                name = NT.get(ntype, hex(ntype))
                notes[name] = notes.get(name, 0) + 1
                i += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    big = [(vaddr, filesz, memsz) for typ, _, _, vaddr, _, filesz, memsz, _ in phs if typ == 1 and memsz >= ram]
    present = any(fs == ms for _, fs, ms in big)
    size = core.stat().st_size
    print(f"{case.name}: core {size / 2**20:.0f} MiB, guest RAM {ram / 2**20:.0f} MiB, "
          f"ram in core: {'yes' if present else 'no'}")
    print("  notes: " + ", ".join(f"{k}x{v}" for k, v in sorted(notes.items())))
    for vaddr, fs, ms in big:
        print(f"  LOAD {vaddr:#x} memsz {ms / 2**20:.0f} MiB filesz {fs / 2**20:.0f} MiB")


if __name__ == "__main__":
    for c in sys.argv[1:]:
        check(Path(c))

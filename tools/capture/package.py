#!/usr/bin/env python3
"""Turn a capture.py output folder into a case folder: case.json, instant.jsonl, compressed dumps.

usage: package.py CAPTURE_DIR CASE_DIR "description"
"""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

src, dst, desc = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
dst.mkdir(parents=True, exist_ok=True)
lines = (src / "qmp.jsonl").read_text().splitlines()
instant = []
for ln in lines:
    if json.loads(ln)["msg"].get("execute") == "dump-guest-memory":
        break
    instant.append(ln)
(dst / "instant.jsonl").write_text("\n".join(instant) + "\n")
for f in ["early.jsonl", "truth.json", "console.log", "qemu.out"] + sorted(p.name for p in src.glob("daemon*.out")):
    if (src / f).exists():
        shutil.copy(src / f, dst / f)
# the command line, with this machine's scratch paths replaced by names
argv = [re.sub(r"/\S*/vdcap-\d+", "RUNDIR", x) for x in json.loads((src / "qemu-argv.json").read_text())]
argv = [re.sub(r"file:\S*/console.log", "file:console.log", x) for x in argv]
argv = [("vmlinuz" if a == "-kernel" else "initramfs.cpio.gz") if i and argv[i - 1] in ("-kernel", "-initrd") else a
        for i, a in enumerate(argv)]
(dst / "qemu-argv.json").write_text(json.dumps(argv, indent=1) + "\n")
dumps = {}
for kind, name in [("elf", "dump.elf"), ("kdump-zlib", "dump.kdump-zlib"), ("qemu-core", "qemu.core")]:
    if (src / name).exists():
        if os.environ.get("VD_NOCOMPRESS"):  # scratch captures: keep the dumps as they are (moved)
            shutil.move(str(src / name), dst / name)
            dumps[kind] = name
            continue
        if not (dst / (name + ".zst")).exists():
            subprocess.run(["zstd", "-q", "-T2", "-12", "-f", str(src / name), "-o", str(dst / (name + ".zst"))], check=True)
        dumps[kind] = name + ".zst"
# other formats QEMU wrote (kdump-lzo, kdump-snappy): kept, listed apart (fidelity.py scores "dumps" only)
other = {}
for p in sorted(src.glob("dump.kdump-*")):
    kind = p.name[len("dump."):]
    if kind in dumps:
        continue
    if os.environ.get("VD_NOCOMPRESS"):
        shutil.move(str(p), dst / p.name)
        other[kind] = p.name
    else:
        subprocess.run(["zstd", "-q", "-T2", "-12", "-f", str(p), "-o", str(dst / (p.name + ".zst"))], check=True)
        other[kind] = p.name + ".zst"
truth = json.loads((src / "truth.json").read_text())
manifest = {
    "name": dst.name, "description": desc, "qemu": truth.get("qemu"),
    "dumps": dumps, "logs": {"early": "early.jsonl", "instant": "instant.jsonl"}, "truth": "truth.json"}
if (src / "core-kind").exists():  # who wrote qemu.core: "gcore" (gdb, VM stopped) or "kernel" (SIGABRT)
    manifest["core"] = (src / "core-kind").read_text().strip()
if other:
    manifest["other_dumps"] = other
(dst / "case.json").write_text(json.dumps(manifest, indent=1) + "\n")
for p in dst.iterdir():
    p.chmod(0o644)
print(dst, sorted(p.name for p in dst.iterdir()))

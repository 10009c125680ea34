"""Memory stays bounded: the peak RSS of carving and of one ``--queue`` answer as the dump grows.

Made at bench time in a temporary folder, and removed after: sparse ELF guest dumps of 1 and
64 GiB (one PT_LOAD; the shared ``basic`` capture's RAM written at its own guest-physical
addresses, and 64 MiB of it again every 4 GiB, so carving reads data far apart; the rest holes,
which cost no disk) and a 64 GiB sparse kdump (1 GiB of dumped zero pages, 32 MiB of text pages, the rest excluded, as
``bench_kdump.py`` makes). Each measurement runs in a fresh process (its ``ru_maxrss``), measured
in the same run against the same on the 160 MiB capture:

* carving (``carve_rings``) the 160 MiB ELF, the 64 GiB ELF and the 64 GiB kdump: the issue's
  bound is 1 GiB;
* ``vdecode DUMP --log LOG --queue 0`` (the log's rings, read lazily) on the 160 MiB capture and
  on the 1 and 64 GiB sparse ELFs: the ratio 64 GiB / 1 GiB should be about 1.

usage: bench_memory.py [--keep]   (--keep: leave the files in the temporary folder)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import dump as capture_dump, log as capture_log, require_captures  # noqa: E402

GiB, MiB = 1 << 30, 1 << 20
VDECODE = str(Path(sys.executable).with_name("vdecode"))
CARVE = ("import sys; from vdecode.space.open import open_dump; "
         "from vdecode.virtio.carve import carve_rings\n"
         "with open_dump(sys.argv[1]) as d: print(len(carve_rings(d.space)))")


# Linux keeps a process's peak RSS across exec, so a child forked from this (big) process would
# report at least this process's size: a small launcher starts each command and reports its peak.
LAUNCH = ("import resource, subprocess, sys\n"
          "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
          "sys.stdout.buffer.write(r.stdout); sys.stderr.buffer.write(r.stderr)\n"
          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
          "sys.exit(r.returncode)")


def peak(argv: list[str]) -> tuple[float, int, str]:
    """Seconds, peak RSS (bytes) and output of one run of ``argv`` in a fresh process."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", LAUNCH, *argv], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{argv[:3]}... failed: {r.stderr[-500:]}")
    return secs, int(r.stderr.splitlines()[-1]) * 1024, r.stdout.strip()


def sparse_elf(folder: Path, basic_elf: Path, gib: int) -> Path:
    """``gib`` GiB of guest RAM, the basic capture's RAM at its addresses and again every 4 GiB."""
    from tests.builders.elf_dump import write_elf_dump
    from vdecode.space.open import open_dump
    path = write_elf_dump(folder / f"sparse{gib}g.elf", [(0, (gib * GiB, None))])
    with open_dump(path) as big:
        base = int(big.space.offsets[0])            # the file offset of guest-physical 0
    with open_dump(basic_elf) as small, open(path, "r+b") as f:
        for start, size in small.space.ranges():
            for off in range(0, size, 64 * MiB):
                f.seek(base + start + off)
                f.write(bytes(small.space.read(start + off, min(64 * MiB, size - off))))
        piece = bytes(small.space.read(16 * MiB, 64 * MiB))
        for k in range(1, gib // 4):
            f.seek(base + k * 4 * GiB)
            f.write(piece)
    return path


def sparse_kdump(folder: Path) -> Path:
    import numpy as np
    from tests.builders.kdump import write_kdump
    rng = np.random.default_rng(5)
    words = np.frombuffer(b"virtio vring desc avail used kick irq page slab ", dtype=np.uint8)
    base = 3 << 18
    pages = {base + i * 7: words[rng.integers(0, len(words), 4096)].tobytes() for i in range(8192)}
    path = folder / "sparse64g.kdump"
    write_kdump(path, pages, ram=[(0, (64 * GiB) // 4096)], dumped_zero=[(1 << 18, 1 << 18)],
                flattened=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the files made")
    args = ap.parse_args()
    require_captures()
    small, log = capture_dump("basic", "elf"), capture_log("basic", "early")
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        t0 = time.perf_counter()
        one, big, kd = sparse_elf(folder, small, 1), sparse_elf(folder, small, 64), sparse_kdump(folder)
        disk = sum(p.stat().st_blocks * 512 for p in (one, big, kd))
        print(f"setup: 1 and 64 GiB sparse ELFs and a 64 GiB sparse kdump written in "
              f"{time.perf_counter() - t0:.1f} s, {disk / MiB:.0f} MiB on disk")
        py = sys.executable
        rows = [("carve 160 MiB ELF (basic)", [py, "-c", CARVE, str(small)]),
                ("carve 64 GiB sparse ELF", [py, "-c", CARVE, str(big)]),
                ("carve 64 GiB sparse kdump", [py, "-c", CARVE, str(kd)]),
                ("--queue 0, 160 MiB ELF", [VDECODE, str(small), "--log", str(log), "--queue", "0"]),
                ("--queue 0, 1 GiB sparse ELF", [VDECODE, str(one), "--log", str(log), "--queue", "0"]),
                ("--queue 0, 64 GiB sparse ELF", [VDECODE, str(big), "--log", str(log), "--queue", "0"])]
        got = {}
        for label, argv in rows:
            runs = [peak(argv) for _ in range(2)]
            secs, rss = min(r[0] for r in runs), min(r[1] for r in runs)
            got[label] = rss
            what = f"{runs[0][2]} rings" if label.startswith("carve") else "answered"
            print(f"{label:28} peak RSS {rss / MiB:7.0f} MiB  {secs:6.2f} s  ({what})")
        worst = max(v for k, v in got.items() if k.startswith("carve"))
        print(f"carving: largest peak RSS {worst / MiB:.0f} MiB (bound 1024 MiB: "
              f"{'within' if worst < GiB else 'OVER'})")
        print(f"--queue peak RSS ratio, 64 GiB / 1 GiB sparse ELF (the same RAM content): "
              f"{got['--queue 0, 64 GiB sparse ELF'] / got['--queue 0, 1 GiB sparse ELF']:.2f}")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()

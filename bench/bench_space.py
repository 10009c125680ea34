"""Benchmark: guest-physical reads through ELF dumps, as ratios to baselines measured in the same run.

Not a test. Run: ``.venv/bin/python bench/bench_space.py [--elf DUMP] [--big-gib 64]``.

- start-up: ``python -c "open_dump(P).space.read(gpa, 4096)"`` vs ``python -c pass``;
- open + read one page in-process: ``open_dump`` + ``read`` + ``close`` vs ``open`` + ``mmap`` +
  slice + ``close`` of the same bytes; on the real capture's ELF and a synthetic 64 GiB sparse ELF;
- full-RAM read throughput of the real capture's ELF, in 1 MiB and 4 KiB reads, vs raw mmap
  slices of the same file bytes;
- where Debian's ``python3-libkdumpfile`` is installed (``/usr/bin/python3 -c "import kdumpfile"``),
  the same open + read and 4 KiB full read through it, as vdecode's time over libkdumpfile's.

The kdump benchmarks live beside the kdump reader's own bench file.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.builders.elf_dump import LoadSegment, write_elf_dump  # noqa: E402
from vdecode.space.open import open_dump  # noqa: E402

CAPTURE = REPO.parent / "shared" / "captures" / "basic" / "dump.elf.zst"
SYSTEM_PYTHON = "/usr/bin/python3"
PAGE = 4096


def best_of(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def startup(path: Path, gpa: int, repeat: int) -> tuple[float, float]:
    code = (f"from vdecode.space.open import open_dump\n"
            f"d = open_dump({str(path)!r}); bytes(d.space.read({gpa}, {PAGE})); d.close()")
    run = lambda c: subprocess.run([sys.executable, "-c", c], check=True, cwd=REPO)  # noqa: E731
    return best_of(lambda: run(code), repeat), best_of(lambda: run("pass"), repeat)


def open_read(path: Path, gpa: int, repeat: int) -> tuple[float, float]:
    with open_dump(path) as d:                       # where the page is in the file, for the baseline
        (_, _, file_off), = d.space.mapping(gpa, PAGE)

    def ours() -> None:
        d = open_dump(path)
        bytes(d.space.read(gpa, PAGE))
        d.close()

    def raw() -> None:
        with open(path, "rb") as f:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            m[file_off:file_off + PAGE]
            m.close()
    return best_of(ours, repeat), best_of(raw, repeat)


def full_read(path: Path, chunk: int) -> tuple[float, float, int]:
    with open_dump(path) as d:
        runs = [(s, z, o) for s, z, o in d.space.runs()]
        space = d.space
        t = time.perf_counter()
        total = 0
        for start, size, _ in runs:
            for gpa in range(start, start + size, chunk):
                total += len(bytes(space.read(gpa, min(chunk, start + size - gpa))))
        ours = time.perf_counter() - t
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        t = time.perf_counter()
        for start, size, off in runs:
            for pos in range(off, off + size, chunk):
                len(bytes(m[pos:min(pos + chunk, off + size)]))
        raw = time.perf_counter() - t
        m.close()
    return ours, raw, total


LIBKDUMPFILE = r"""
import json, statistics, sys, time, kdumpfile
path, gpa, repeat, full = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
runs = json.loads(sys.argv[5])
ts = []
for _ in range(repeat):
    t = time.perf_counter()
    k = kdumpfile.kdumpfile(path)
    bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, gpa, 4096))
    del k
    ts.append(time.perf_counter() - t)
out = {"open_read": statistics.median(ts)}
if full:
    k = kdumpfile.kdumpfile(path)
    t = time.perf_counter()
    for start, size in runs:
        for a in range(start, start + size, 4096):
            k.read(kdumpfile.KDUMP_MACHPHYSADDR, a, 4096)
    out["full_4k"] = time.perf_counter() - t
print(json.dumps(out))
"""


def libkdumpfile(path: Path, gpa: int, repeat: int, runs: list | None) -> dict | None:
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
            [SYSTEM_PYTHON, "-c", "import kdumpfile"], capture_output=True).returncode:
        return None
    r = subprocess.run([SYSTEM_PYTHON, "-c", LIBKDUMPFILE, str(path), str(gpa), str(repeat),
                        "1" if runs else "0", json.dumps(runs or [])],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def sparse_elf(folder: Path, gib: int) -> tuple[Path, int, bytes]:
    """A ``gib`` GiB guest laid out like q35 (2 GiB below 4 GiB, the rest above), all holes but one
    marker page near the top."""
    low = 2 << 30
    high = (gib << 30) - low
    path = write_elf_dump(folder / f"sparse-{gib}g.elf",
                          [LoadSegment(0, None, memsz=low), LoadSegment(1 << 32, None, memsz=high)])
    marker_gpa = (1 << 32) + high - 16 * PAGE
    marker = os.urandom(PAGE)
    with open_dump(path) as d:
        (_, _, off), = d.space.mapping(marker_gpa, PAGE)
    with open(path, "r+b") as f:                      # write the marker into the hole
        f.seek(off)
        f.write(marker)
    return path, marker_gpa, marker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elf", type=Path, default=CAPTURE, help="an ELF dump (.zst is fine)")
    ap.add_argument("--big-gib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()

    with open_dump(args.elf) as d:
        elf = Path(d.info.get("decompressed_to", args.elf))
        ram = d.space.ranges()
        gpa = ram[0][0] + (ram[0][1] // 2 // PAGE) * PAGE        # a page in the middle of RAM
    print(f"ELF: {elf} ({sum(z for _, z in ram) >> 20} MiB RAM in {len(ram)} ranges)")

    ours, base = startup(elf, gpa, 7)
    print(f"start-up + open + read 1 page:  {ours * 1e3:7.1f} ms vs python -c pass "
          f"{base * 1e3:6.1f} ms  ratio {ours / base:5.2f}")

    ours, base = open_read(elf, gpa, args.repeat)
    print(f"open + read 1 page (capture):   {ours * 1e6:7.1f} us vs raw mmap {base * 1e6:6.1f} us  "
          f"ratio {ours / base:5.2f}")
    lib = libkdumpfile(elf, gpa, args.repeat, [list(r) for r in ram])
    if lib:
        print(f"  libkdumpfile:                 {lib['open_read'] * 1e6:7.1f} us  "
              f"vdecode/libkdumpfile {ours / lib['open_read']:5.2f}")

    with tempfile.TemporaryDirectory(dir=os.environ.get("VDECODE_BENCH_TMP")) as tmp:
        big, mgpa, marker = sparse_elf(Path(tmp), args.big_gib)
        with open_dump(big) as d:
            assert bytes(d.space.read(mgpa, PAGE)) == marker
        ours, base = open_read(big, mgpa, args.repeat)
        print(f"open + read 1 page ({args.big_gib} GiB sparse): {ours * 1e6:5.1f} us vs raw mmap "
              f"{base * 1e6:6.1f} us  ratio {ours / base:5.2f}  (file {big.stat().st_size >> 30} GiB, "
              f"{big.stat().st_blocks * 512 >> 10} KiB on disk)")
        lib_big = libkdumpfile(big, mgpa, args.repeat, None)
        if lib_big:
            print(f"  libkdumpfile:                 {lib_big['open_read'] * 1e6:7.1f} us  "
                  f"vdecode/libkdumpfile {ours / lib_big['open_read']:5.2f}")

    for chunk, label in ((1 << 20, "1 MiB"), (PAGE, "4 KiB")):
        full_read(elf, chunk)                                           # warm the page cache
        ours, base, total = full_read(elf, chunk)
        print(f"full-RAM read, {label} reads:     {total / ours / 1e9:6.2f} GB/s vs raw mmap "
              f"{total / base / 1e9:6.2f} GB/s  time ratio {ours / base:5.2f}")
        if chunk == PAGE and lib and "full_4k" in lib:
            print(f"  libkdumpfile 4 KiB reads:     {total / lib['full_4k'] / 1e9:6.2f} GB/s  "
                  f"vdecode/libkdumpfile time {ours / lib['full_4k']:5.2f}")


if __name__ == "__main__":
    main()

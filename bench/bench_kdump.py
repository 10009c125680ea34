"""Benchmark the kdump-compressed reader (not a test: prints figures, asserts nothing on speed).

Measures, each as a ratio to a baseline timed in the same run:

- open + read one page, in process: ``open_kdump`` + ``read`` + close against the least work that
  gives the same bytes (open, mmap, slice the page's stored bytes, ``zlib.decompress``, close),
  on the real capture (flattened as QEMU wrote it, and rearranged) and on a synthetic 64 GiB
  sparse kdump (flattened and plain);
- start-up: ``python -c "open_dump + read one page"`` against ``python -c pass``;
- inflating the real capture's zlib pages with zlib, libdeflate and ISA-L (where installed);
- full-RAM read throughput of kdump-zlib: ``read_pages`` over every dumped page (in runs of 1024
  pages, and of 16384 as the carver reads, on one core and on every core) against a loop of
  ``zlib.decompress`` / mmap copies over the same descriptors, in one process;
- the flattened record walk of a 1,000,000-record stream against the index kept between opens;
- the same against Debian's ``python3-libkdumpfile`` (run by ``/usr/bin/python3``) where it is
  installed; it reads rearranged files only (0.5.1 has no flattened support).

Usage: ``.venv/bin/python bench/bench_kdump.py [--capture basic] [--repeat 20]``
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.builders.kdump import write_kdump  # noqa: E402
from benchlib import dump as capture_dump  # noqa: E402  (bench/ is the script's own folder)
from vdecode.sources.files import FileView  # noqa: E402
from vdecode.sources.flattened import read_flat_index  # noqa: E402
from vdecode.cores import usable_cores  # noqa: E402
from vdecode.space import page_codecs, page_pool  # noqa: E402
from vdecode.space.paged import open_kdump  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
LIBKDUMPFILE_SCRIPT = r"""
import json, sys, time
import kdumpfile
args = json.loads(sys.argv[1])
out = {}
t = []
for _ in range(args["repeat"]):
    t0 = time.perf_counter()
    k = kdumpfile.kdumpfile(args["path"])
    k.read(kdumpfile.KDUMP_MACHPHYSADDR, args["gpa"], 4096)
    del k
    t.append(time.perf_counter() - t0)
out["open_read"] = sorted(t)[len(t) // 2]
if args.get("runs"):
    best = None
    for _ in range(args.get("rounds", 3)):
        k = kdumpfile.kdumpfile(args["path"])
        read, space = k.read, kdumpfile.KDUMP_MACHPHYSADDR
        t0 = time.perf_counter()
        n = 0
        for pfn, count in args["runs"]:
            for p in range(pfn, pfn + count):
                read(space, p * 4096, 4096)
            n += count
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        del k
    out["full"] = best
    out["pages"] = n
print(json.dumps(out))
"""


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def page_location(path: Path, pfn: int) -> tuple[int, int, int]:
    """(file offset, size, flags) of pfn's stored bytes, found with vdecode once (setup)."""
    with FileView(path) as view:
        dump = open_kdump(view)
        s = dump.space
        off = s.kd.desc_offset + s.desc_index(pfn) * 24
        o, size, flags, _ = s._desc.unpack(s.kd.data.view(off, 24))
        if s.kd.flat is not None:
            o = s.kd.data.file_offset(o)
        del s, dump
    return o, size, flags


def open_read_vdecode(path: Path, gpa: int) -> bytes:
    with FileView(path) as view:
        dump = open_kdump(view)
        page = bytes(dump.space.read(gpa, 4096))
        del dump
    return page


def open_read_baseline(path: Path, loc: tuple[int, int, int]) -> bytes:
    o, size, flags = loc
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        raw = m[o:o + size]
        m.close()
    return zlib.decompress(raw) if flags == 1 else raw


def libkdumpfile(args: dict) -> dict | None:
    if not os.path.exists(SYSTEM_PYTHON):
        return None
    r = subprocess.run([SYSTEM_PYTHON, "-c", LIBKDUMPFILE_SCRIPT, json.dumps(args)],
                       capture_output=True, text=True)
    if r.returncode:
        if "No module named 'kdumpfile'" in r.stderr:
            return None
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout)


def full_read_vdecode(path: Path, batch: int = 1024, workers: int | None = 1) -> tuple[float, int]:
    """``read_pages`` over every dumped page in runs of ``batch`` pages, on ``workers`` processes
    (:mod:`vdecode.space.page_pool`, for runs of enough compressed pages; ``None``: the cores the
    load average leaves free)."""
    with FileView(path) as view:
        dump = open_kdump(view)
        s = dump.space
        s.bulk_workers = workers
        t0 = time.perf_counter()
        n = 0
        for start, size in s.dumped_ranges():
            pfn, end = start // 4096, (start + size) // 4096
            while pfn < end:
                c = min(batch, end - pfn)
                s.read_pages(pfn, c)
                pfn += c
                n += c
        dt = time.perf_counter() - t0
        del s, dump
    return dt, n


def inflate_loops(path: Path, rounds: int) -> dict[str, float]:
    """Seconds (best of ``rounds``) to inflate every zlib page of the dump with zlib, libdeflate
    (``deflate``) and ISA-L (``isal``, where installed; not a dependency), one page a call."""
    import zlib
    with FileView(path) as view:
        dump = open_kdump(view)
        s, kd = dump.space, dump.space.kd
        descs = np.frombuffer(kd.data.view(kd.desc_offset, s.num_dumpable * 24), dtype=s._dtype)
        mem = bytes(kd.data.memory())
        pages = [mem[o:o + n] for o, n, f in zip(descs["offset"].tolist(), descs["size"].tolist(),
                                                 descs["flags"].tolist()) if f == 1]
        del descs, s, dump, kd
    fns = {"zlib": lambda b: zlib.decompress(b, 15, 4096)}
    try:
        import deflate
        fns["libdeflate"] = lambda b: deflate.zlib_decompress(b, 4096)
    except ImportError:
        pass
    try:
        from isal import isal_zlib
        fns["isal"] = lambda b: isal_zlib.decompress(b, 15, 4096)
    except ImportError:
        pass
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for b in pages:
                fn(b)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def full_read_baseline(path: Path) -> tuple[float, int]:
    """The least Python can do: the descriptors already decoded, one decompress or copy a page."""
    with FileView(path) as view:
        dump = open_kdump(view)
        s = dump.space
        kd = s.kd
        descs = np.frombuffer(kd.data.view(kd.desc_offset, s.num_dumpable * 24), dtype=s._dtype)
        offs, sizes, flags = descs["offset"].tolist(), descs["size"].tolist(), descs["flags"].tolist()
        del descs
        if kd.flat is not None:   # the baseline reads the rearranged file's bytes directly
            mem = bytes(kd.data.memory())
        else:
            mem = kd.data.memory()
        out = bytearray(1024 * 4096)
        t0 = time.perf_counter()
        for i, (o, n, f) in enumerate(zip(offs, sizes, flags)):
            j = (i & 1023) * 4096
            out[j:j + 4096] = zlib.decompress(mem[o:o + n]) if f else mem[o:o + n]
        dt = time.perf_counter() - t0
        del mem, s, dump, kd
    return dt, len(offs)


def startup(path: Path, gpa: int) -> tuple[float, float]:
    code = (f"from vdecode.space.open import open_dump; d = open_dump({str(path)!r}); "
            f"bytes(d.space.read({gpa}, 4096))")
    py = sys.executable

    def run(c: str) -> None:
        subprocess.run([py, "-c", c], check=True)

    return median_time(lambda: run(code), 5), median_time(lambda: run("pass"), 5)


def synthetic_64g(folder: Path) -> tuple[Path, Path, int]:
    """64 GiB of RAM: 1 GiB dumped as the shared zero page, 32 MiB of text-like pages, rest
    excluded (makedumpfile -d 31 style)."""
    rng = np.random.default_rng(5)
    words = np.frombuffer(b"virtio vring desc avail used kick irq page slab ", dtype=np.uint8)
    npfn = (64 << 30) // 4096
    base = 3 << 18          # pfn of 3 GiB
    pages = {}
    for i in range(8192):
        page = words[rng.integers(0, len(words), 4096)].tobytes()
        pages[base + i * 7] = page     # scattered through 224 MiB
    paths = []
    for flat in (True, False):
        p = folder / f"sparse64g.{'flat' if flat else 'plain'}.kdump"
        write_kdump(p, pages, ram=[(0, npfn)], dumped_zero=[(1 << 18, 1 << 18)], flattened=flat)
        paths.append(p)
    return paths[0], paths[1], (base + 4000 * 7) * 4096


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", default="basic")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="full-RAM reads: best of this many")
    args = ap.parse_args()
    real_flat = capture_dump(args.capture, "kdump-zlib")
    tmp = Path(tempfile.mkdtemp(prefix="bench-kdump-"))
    real_plain = tmp / "real.rearranged.kdump"
    with FileView(real_flat) as view:                 # makedumpfile -R, done by our reader
        dump = open_kdump(view)
        real_plain.write_bytes(bytes(dump.space.kd.data.memory()))
        del dump
    t0 = time.perf_counter()
    syn_flat, syn_plain, syn_gpa = synthetic_64g(tmp)
    print(f"setup: synthetic 64 GiB kdumps written in {time.perf_counter() - t0:.1f} s "
          f"({syn_flat.stat().st_size >> 20} MiB flattened, {syn_plain.stat().st_size >> 20} MiB plain)")

    # a zlib page of the real capture, about in the middle of RAM
    with FileView(real_flat) as view:
        dump = open_kdump(view)
        s = dump.space
        pfn = next(p for p in range(20000, 40000) if page_location(real_flat, p)[2] == 1)
        del s, dump
    real_gpa = pfn * 4096

    print(f"\n== open + read one page (median of {args.repeat}; ratio = vdecode / baseline) ==")
    print(f"{'file':36} {'vdecode':>10} {'baseline':>10} {'ratio':>7} {'libkdumpfile':>13} {'vd/lkf':>7}")
    for label, path, gpa in [("real kdump-zlib (flattened, QEMU)", real_flat, real_gpa),
                             ("real kdump-zlib (rearranged)", real_plain, real_gpa),
                             ("synthetic 64 GiB sparse (flattened)", syn_flat, syn_gpa),
                             ("synthetic 64 GiB sparse (plain)", syn_plain, syn_gpa)]:
        loc = page_location(path, gpa // 4096)
        assert open_read_vdecode(path, gpa) == open_read_baseline(path, loc)
        tv = median_time(lambda: open_read_vdecode(path, gpa), args.repeat)
        tb = median_time(lambda: open_read_baseline(path, loc), args.repeat)
        lk = None if "flattened" in label else libkdumpfile({"path": str(path), "gpa": gpa,
                                                              "repeat": args.repeat})
        lks = f"{lk['open_read'] * 1e3:10.2f} ms {tv / lk['open_read']:7.2f}" if lk else \
            f"{'n/a':>13} {'':>7}"
        print(f"{label:36} {tv * 1e3:7.2f} ms {tb * 1e3:7.3f} ms {tv / tb:7.1f} {lks}")

    tv, tb = startup(real_flat, real_gpa)
    print(f"\n== start-up: python -c 'open_dump + read one page' {tv * 1e3:.0f} ms, "
          f"python -c pass {tb * 1e3:.0f} ms, ratio {tv / tb:.1f}")

    print(f"\n== zlib pages of the real capture, one inflate a call, best of {args.rounds} "
          "(ratio = zlib time / this library's) ==")
    loops = inflate_loops(real_flat, args.rounds)
    print("  ".join(f"{k} {loops['zlib'] / v:.2f}x" for k, v in loops.items()))

    print(f"\n== full-RAM read throughput, kdump-zlib, best of {args.rounds} "
          "(ratio = baseline time / vdecode time) ==")
    print(f"(baseline: one zlib loop in one process; vdecode inflates with "
          f"{page_codecs.INFLATE}; 'every core' = {usable_cores()} processes for runs of "
          f"{page_pool.POOL_MIN_PAGES} compressed pages or more)")
    for label, path in [("real (flattened, QEMU)", real_flat), ("real (rearranged)", real_plain)]:
        tb = float("inf")
        tv: dict[str, float] = {}
        settings = {"1024-page runs, one core": (1024, 1), "16384-page runs, one core": (16384, 1),
                    "16384-page runs, every core": (16384, usable_cores())}
        for _ in range(args.rounds):      # best of a few, interleaved: the machine may be shared
            for name, (batch, workers) in settings.items():
                t, n = full_read_vdecode(path, batch, workers)
                tv[name] = min(tv.get(name, float("inf")), t)
            t, _ = full_read_baseline(path)
            tb = min(tb, t)
        mb = n * 4096 / 1e6
        print(f"{label:24} baseline (zlib loop) {mb / tb:7.0f} MB/s")
        for name, t in tv.items():
            print(f"{'':24} vdecode, {name:28} {mb / t:7.0f} MB/s, ratio {tb / t:.2f}")
        if "rearranged" in label:
            with FileView(path) as view:
                dump = open_kdump(view)
                runs = [(int(a) // 4096, int(s) // 4096) for a, s in dump.space.dumped_ranges()]
                del dump
            lk = libkdumpfile({"path": str(path), "gpa": real_gpa, "repeat": 1, "runs": runs,
                               "rounds": args.rounds})
            if lk:
                best = min(tv.values())
                print(f"{'':24} libkdumpfile {lk['pages'] * 4096 / 1e6 / lk['full']:7.0f} MB/s, "
                      f"vdecode (best)/libkdumpfile {lk['full'] / best:.2f}x")
    # the record walk of a large stream, and the index kept between opens
    n = 1_000_000
    rec = np.zeros(n, dtype=[("o", ">i8"), ("s", ">i8"), ("d", "u1", (48,))])
    rec["o"], rec["s"] = np.arange(n) * 48, 48
    many = tmp / "many-records.flat"
    many.write_bytes((b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
                     + rec.tobytes() + struct.pack(">qq", -1, -1))
    cache = tmp / "cache"
    with FileView(many) as view:
        walk = median_time(lambda: read_flat_index(view), 3)
        read_flat_index(view, cache_dir=cache)
        cached = median_time(lambda: read_flat_index(view, cache_dir=cache), 3)
    print(f"\n== flattened record index, {n} records: walk {walk * 1e3:.0f} ms "
          f"({walk / n * 1e9:.0f} ns a record), kept index {cached * 1e3:.0f} ms "
          f"(walk / kept = {walk / cached:.0f}x)")
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()

"""``vdecode triage`` on a fleet with one huge dump: its carving split over the workers, or not.

The fleet is built at bench time in a temporary folder (removed after): ``--bundles`` (40)
recorded bundles (``tests/data/captures*/*/*.vdb.zst``, decompressed) and one huge VM, most of
the fleet's work: a sparse ELF guest dump of ``--gib`` GiB (64) and its QMP log. The huge VM is
the recorded driver-reset capture (``tests/data/carve/reset``: the log's rings went stale, so
triage carves the guest RAM for the driver's new ones), its pages at their own addresses, with
64 MiB of the shared ``basic`` capture's RAM (real pages) again every GiB above them so carving
reads data far apart; the rest is holes, which cost no disk.

With ``--kind kdump`` the huge dump is a kdump-zlib file instead (a quarter of its RAM dumped,
real pages, each compressed alone; the rest excluded): carving it decodes every dumped page, and
the split spreads that decoding over the workers too (each part decodes its own chunks).

Each setting runs in a fresh process (discovery included, as the command does), with every
process's own bulk work on one core (``VDECODE_WORKERS=1``), so a worker is one core:

* 1 worker (one process);
* 2 workers, the huge dump's carving split into chunks spread over both (the default,
  :data:`vdecode.triage.run.SPLIT_CARVE_BYTES`);
* 2 workers, no split (one worker carves the huge dump alone while the other takes the bundles).

Printed: each setting's time (the runs, the best), the CPU time of all its processes (the work
done) and of its busiest process (the fleet's critical path: what the run takes on cores nobody
else uses; a shared machine's load hardly changes either), the peak RSS of its largest process,
and the ratios of the best times and of the busiest processes (2 workers split / 1 worker, split
/ no split). All settings must give the same records.

Usage: ``python bench/bench_triage_huge.py [--gib N] [--bundles N] [--repeat N] [--kind K]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import REPO, dump as capture_dump, require_captures  # noqa: E402

GiB, MiB = 1 << 30, 1 << 20

# One setting in a fresh process: its time and a digest of its records on stdout.
RUN = """
import hashlib, json, os, resource, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import util
import vdecode.triage.run as triage_run
from vdecode.triage import discover
folder, workers, split, busy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime

def note_cpu():                     # a worker leaving: its CPU seconds, for the busiest one
    with open(os.path.join(busy, str(os.getpid())), "w") as f:
        f.write(str(cpu()))

def started(c0):
    util.Finalize(None, note_cpu, exitpriority=100)

class Pool(ProcessPoolExecutor):
    def __init__(self, max_workers):
        super().__init__(max_workers, initializer=started, initargs=(0,))

triage_run.ProcessPoolExecutor = Pool
c0, t0 = cpu(), time.perf_counter()
records = triage_run.run_local(discover([folder]), workers, split_from=split or None)
secs = time.perf_counter() - t0
main = cpu() - c0
done = [float(open(os.path.join(busy, n)).read()) for n in os.listdir(busy)]
text = json.dumps(records, sort_keys=True)
print(json.dumps({"secs": secs, "vms": len(records), "busiest": max([main, *done]),
                  "digest": hashlib.sha256(text.encode()).hexdigest()}))
"""

# Linux keeps a process's peak RSS across exec, so a child forked from this process would report
# at least this one's size: a small launcher starts each run; RUSAGE_CHILDREN's ru_maxrss is then
# the largest of the run's processes (the triage process or one of its workers).
LAUNCH = ("import resource, subprocess, sys\n"
          "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
          "sys.stdout.buffer.write(r.stdout); sys.stderr.buffer.write(r.stderr)\n"
          "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
          "print(u.ru_utime + u.ru_stime, u.ru_maxrss, file=sys.stderr)\n"
          "sys.exit(r.returncode)")


def _unzstd(src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, open(out, "wb") as o:
        zstandard.ZstdDecompressor().copy_stream(f, o)


def huge_vm(folder: Path, gib: int, kind: str = "elf") -> Path:
    """``huge.elf`` or ``huge.kdump`` (``gib`` GiB) and ``huge.qmp.jsonl``: the driver-reset
    capture, grown."""
    from tests.builders.elf_dump import write_elf_dump
    from vdecode.space.open import open_dump

    case = REPO / "tests" / "data" / "carve" / "reset"
    small_path = folder / "reset-small.elf"
    _unzstd(case / "dump.elf.zst", small_path)
    _unzstd(case / "early.jsonl.zst", folder / "fleet" / "huge.qmp.jsonl")
    if kind == "kdump":
        return _huge_kdump(folder, small_path, gib)
    path = write_elf_dump(folder / "fleet" / "huge.elf", [(0, (gib * GiB, None))])
    with open_dump(path) as big:
        base = int(big.space.offsets[0])            # the file offset of guest-physical 0
    with open_dump(capture_dump("basic", "elf")) as basic:
        piece = bytes(basic.space.read(16 * MiB, 64 * MiB))
    with open_dump(small_path) as small, open(path, "r+b") as f:
        top = 0
        for start, size in small.space.ranges():
            top = max(top, start + size)
            for off in range(0, size, 64 * MiB):
                data = bytes(small.space.read(start + off, min(64 * MiB, size - off)))
                if data.count(0) != len(data):
                    f.seek(base + start + off)
                    f.write(data)
        for at in range(-(-top // GiB) * GiB, gib * GiB, GiB):
            f.seek(base + at)
            f.write(piece)
    small_path.unlink()
    return path


def _huge_kdump(folder: Path, small_path: Path, gib: int) -> Path:
    """A kdump (zlib, as ``virsh dump --memory-only --format kdump-zlib``) of ``gib`` GiB: the
    capture's RAM (its zero pages as QEMU's shared zero page), and 64 MiB of the ``basic``
    capture's RAM every 256 MiB above them (a quarter of the RAM dumped, each page compressed on
    its own: carving decodes them all); the rest excluded, as makedumpfile leaves free pages
    out."""
    from tests.builders.kdump import write_kdump
    from vdecode.space.open import open_dump

    page = 4096
    pages: dict[int, bytes] = {}
    with open_dump(small_path) as small:
        top = 0
        for start, size in small.space.ranges():
            top = max(top, start + size)
            for at in range(start, start + size, page):
                pages[at // page] = bytes(small.space.read(at, page))
    with open_dump(capture_dump("basic", "elf")) as basic:
        piece = bytes(basic.space.read(16 * MiB, 64 * MiB))
    step = 256 * MiB
    for at in range(-(-top // step) * step, gib * GiB, step):
        for k in range(0, len(piece), page):
            pages[(at + k) // page] = piece[k:k + page]
    path = folder / "fleet" / "huge.kdump"
    write_kdump(path, pages, ram=[(0, gib * GiB // page)], flattened=False)
    small_path.unlink()
    return path


def build_fleet(root: Path, bundles: int, gib: int, kind: str = "elf") -> Path:
    fleet = root / "fleet"
    sources = sorted((REPO / "tests" / "data").glob("captures*/*/*.vdb.zst"))
    for i in range(bundles):
        src = sources[i % len(sources)]
        _unzstd(src, fleet / f"{i:03d}-{src.parent.name}-{src.name[:-4]}")
    huge_vm(root, gib, kind)
    return fleet


def run(fleet: Path, workers: int, split: int) -> tuple[float, int, str, int, float, float]:
    """Seconds, VMs, records digest, peak RSS (bytes), CPU seconds (every process) and the
    busiest process's CPU seconds of one setting, in a fresh process."""
    env = {**os.environ, "VDECODE_WORKERS": "1"}
    with tempfile.TemporaryDirectory(prefix="busy-", dir=fleet.parent) as busy:
        r = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-c", RUN, str(fleet),
                            str(workers), str(split), busy], capture_output=True, text=True,
                           env=env)
    if r.returncode:
        raise SystemExit(f"bench_triage_huge: {workers} workers failed: {r.stderr[-1500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    cpu, maxrss = r.stderr.splitlines()[-1].split()
    return (out["secs"], out["vms"], out["digest"], int(maxrss) * 1024, float(cpu),
            out["busiest"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=None,
                    help="the huge dump's guest RAM in GiB (default 64; 8 for a kdump, whose "
                         "building compresses each dumped page)")
    ap.add_argument("--bundles", type=int, default=40, help="small bundles beside it")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is kept")
    ap.add_argument("--kind", choices=("elf", "kdump"), default="elf",
                    help="the huge dump's format (kdump: a quarter of its RAM dumped, zlib)")
    a = ap.parse_args()
    a.gib = a.gib or (64 if a.kind == "elf" else 8)
    require_captures()
    never = 1 << 62                       # split_from beyond any dump: no split
    settings = {"1 worker": (1, 0), "2 workers, split": (2, 0), "2 workers, no split": (2, never)}
    with tempfile.TemporaryDirectory(prefix="bench-triage-huge-") as tmp:
        fleet = build_fleet(Path(tmp), a.bundles, a.gib, a.kind)
        best = {k: float("inf") for k in settings}
        rss = {k: 0 for k in settings}
        cpu = {k: float("inf") for k in settings}
        busiest = {k: float("inf") for k in settings}
        every: dict[str, list[float]] = {k: [] for k in settings}
        digest = vms = None
        for _ in range(a.repeat):          # the settings take turns, so a slow spell hits all
            for name, (workers, split) in settings.items():
                secs, n, d, peak, used, most = run(fleet, workers, split)
                if digest not in (None, d):
                    raise SystemExit(f"bench_triage_huge: {name} gave other records")
                digest, vms = d, n
                best[name] = min(best[name], secs)
                every[name].append(secs)
                rss[name] = max(rss[name], peak)
                cpu[name] = min(cpu[name], used)
                busiest[name] = min(busiest[name], most)
    what = "sparse ELF" if a.kind == "elf" else "kdump-zlib (1/4 dumped)"
    print(f"fleet: {a.bundles} bundles + one {a.gib} GiB {what} (driver reset: carved), "
          f"{vms} VMs; cores: {len(os.sched_getaffinity(0))}; load average "
          f"{os.getloadavg()[0]:.1f}")
    for name in settings:
        runs = ", ".join(f"{t:.2f}" for t in every[name])
        print(f"{name:20s}: best {best[name]:6.2f} s (runs {runs}); CPU {cpu[name]:6.2f} s, "
              f"busiest process {busiest[name]:6.2f} s; peak RSS {rss[name] / MiB:4.0f} MiB")
    one, split, whole = (best[k] for k in settings)
    print(f"ratio 2 workers (split) / 1 worker: {one / split:.2f}x; "
          f"split / no split: {whole / split:.2f}x; no split / 1 worker: {one / whole:.2f}x")
    one, split, whole = (busiest[k] for k in settings)
    print(f"busiest process's CPU (the time on otherwise idle cores): split / 1 worker "
          f"{one / split:.2f}x; split / no split {whole / split:.2f}x")


if __name__ == "__main__":
    main()

"""``vdecode triage`` throughput: VMs per second with 2 local worker processes, as a ratio to 1.

The folder is built once in a temporary directory from what the repository and the shared
captures hold: every recorded bundle (``tests/data/captures/*/*.vdb.zst``, decompressed), the
samples, and each shared capture's ELF dump (decompressed) with its early log as ``NAME.elf`` +
``NAME.qmp.jsonl``. Both runs triage the same folder (the discovery included, as the command
does) and must give the same records. ``--workers 1`` runs in this process; ``--workers 2``
includes starting the pool, as a user sees it.

Usage: ``python bench/bench_triage.py [--repeat N] [--copies K]`` (``--copies`` repeats the
folder's inputs K times under different VM names, for a longer run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import zstandard

from vdecode.triage.run import run_triage

REPO = Path(__file__).resolve().parent.parent
CAPTURES = Path(os.environ.get("VDECODE_CAPTURES", REPO.parent / "shared" / "captures"))


def _unzstd(src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, open(out, "wb") as o:
        zstandard.ZstdDecompressor().copy_stream(f, o)


def build_folder(root: Path, copies: int) -> int:
    """Write the bench folder; returns the number of files written."""
    n = 0
    for k in range(copies):
        base = root / f"copy{k}"
        for src in sorted((REPO / "tests" / "data" / "captures").glob("*/*.vdb.zst")):
            _unzstd(src, base / src.parent.name / src.name[:-4])
            n += 1
        for src in sorted((REPO / "samples").glob("*.vdb")):
            shutil.copy(src, base / f"{src.stem}-{k}.vdb")
            n += 1
        for case in sorted(CAPTURES.glob("*/case.json")) if CAPTURES.is_dir() else []:
            folder = case.parent
            if (folder / "dump.elf.zst").exists() and (folder / "early.jsonl").exists():
                name = f"{folder.name}-{k}"
                if k == 0:
                    _unzstd(folder / "dump.elf.zst", root / "elf" / f"{folder.name}.elf")
                os.link(root / "elf" / f"{folder.name}.elf", base / f"{name}.elf")
                shutil.copy(folder / "early.jsonl", base / f"{name}.qmp.jsonl")
                n += 2
    return n


def timed(paths: list[str], workers: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    records = run_triage(paths, workers=workers)
    return time.perf_counter() - t0, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting; the best is kept")
    ap.add_argument("--copies", type=int, default=2, help="copies of the inputs in the folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-triage-") as tmp:
        root = Path(tmp)
        files = build_folder(root / "fleet", args.copies)
        paths = [str(root / "fleet")]
        one = two = float("inf")
        ref = None
        for _ in range(args.repeat):
            t1, r1 = timed(paths, 1)
            t2, r2 = timed(paths, 2)
            if ref is None:
                ref = r1
            if r1 != ref or r2 != ref:
                raise SystemExit("bench_triage: records differ between runs")
            one, two = min(one, t1), min(two, t2)
        n = len(ref)
        print(f"folder: {files} files, {n} VMs; cores available: {len(os.sched_getaffinity(0))}")
        print(f"1 worker : {one:7.2f} s  {n / one:7.1f} VMs/s")
        print(f"2 workers: {two:7.2f} s  {n / two:7.1f} VMs/s")
        print(f"throughput ratio 2 workers / 1 worker: {one / two:.2f}x")


if __name__ == "__main__":
    main()

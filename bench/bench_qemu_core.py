"""Benchmark: opening a QEMU process core, as ratios to baselines measured in the same run.

Not a test. Run: ``.venv/bin/python bench/bench_qemu_core.py [--core CORE]`` (default: the
decompressed cores of the shared captures).

- open: ``open_qemu_core`` (NT_FILE, build-id, RAMBlocks, guest RAM map, VirtQueue scan, devices)
  vs the baseline ``read_elf`` + the host-virtual ``SegmentedSpace`` alone (what any reader of
  the file pays), and vs one sequential ``numpy`` pass over the same writable segments the scan
  reads (the floor for a scan of that memory);
- ring reads: 4 KiB guest-physical reads of every ring page through ``GuestRamSpace`` vs the same
  pages through the ELF dump's ``SegmentedSpace``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vdecode.sources.elf_dump import read_elf  # noqa: E402
from vdecode.sources.files import FileView  # noqa: E402
from vdecode.space.open import open_dump  # noqa: E402
from vdecode.space.qemu_core import host_space, open_qemu_core  # noqa: E402

from benchlib import dump, require_captures  # noqa: E402  (bench/ is the script's own folder)



def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench(core: Path, elf_dump: Path | None) -> None:
    view = FileView(core)
    elf = read_elf(view)

    def baseline():
        e = read_elf(view)
        host_space(view, e)

    def scan_floor():
        loads = elf.loads
        for off, n, f, fs in zip(loads["p_offset"].tolist(), loads["p_memsz"].tolist(),
                                 loads["p_flags"].tolist(), loads["p_filesz"].tolist()):
            if f & 2 and fs == n:
                np.frombuffer(view.view(off, n // 8 * 8), "<u8").max()

    def full():
        open_qemu_core(view, elf)

    t_base = best_of(baseline, 5)
    t_floor = best_of(scan_floor, 3)
    t_full = best_of(full, 3)
    print(f"{core}: open {t_full * 1e3:.0f} ms = {t_full / t_base:.0f}x read_elf+space "
          f"({t_base * 1e3:.1f} ms), {t_full / t_floor:.2f}x one numpy pass over writable memory "
          f"({t_floor * 1e3:.0f} ms)")
    dump = open_qemu_core(view, elf)
    if elf_dump and elf_dump.exists() and dump.space is not None:
        pages = []
        for d in dump.qemu.devices:
            for q in d.queues.values():
                pages += [q.desc // 4096 * 4096, q.avail // 4096 * 4096, q.used // 4096 * 4096]
        pages = [p for p in pages if p]
        other = open_dump(elf_dump)
        t_core = best_of(lambda: [bytes(dump.space.read(p, 4096)) for p in pages], 20)
        t_elf = best_of(lambda: [bytes(other.space.read(p, 4096)) for p in pages], 20)
        print(f"  {len(pages)} ring pages: {t_core / len(pages) * 1e6:.1f} us/page "
              f"= {t_core / t_elf:.2f}x the ELF dump")
        other.close()
    view.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--core", type=Path, action="append")
    args = ap.parse_args()
    if args.core:
        pairs = [(core, core.with_name("dump.elf")) for core in args.core]
    else:
        pairs = [(dump(n, "qemu-core"), dump(n, "elf")) for n in require_captures()]
    for core, elf in pairs:
        bench(core, elf)


if __name__ == "__main__":
    main()

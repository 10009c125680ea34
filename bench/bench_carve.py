"""Carving speed: :func:`vdecode.virtio.carve.carve_rings` over a capture's guest RAM, as a ratio
to a plain ``bytes.find`` scan of the same RAM (a pattern that is not there), measured in the same
run, warm (the dump is read once before timing).

usage: bench_carve.py [DUMP ...]   (default: the shared captures' ELF dumps)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import CAPTURES, Capture, capture_names  # noqa: E402
from vdecode.space.open import open_dump  # noqa: E402
from vdecode.virtio.carve import carve_rings  # noqa: E402


def best(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def find_scan(space) -> None:
    needle = b"\xde\xad\xbe\xef\x01vdecode-not-here"
    for start, size in space.ranges():
        off = 0
        while off < size:
            n = min(64 << 20, size - off)
            bytes(space.read(start + off, n)).find(needle)
            off += n


def main() -> None:
    dumps = sys.argv[1:] or [str(Capture(CAPTURES / n).dump("elf")) for n in capture_names()]
    for path in dumps:
        with open_dump(path) as dump:
            ram = sum(int(n) for _, n in dump.space.ranges())
            carve_rings(dump.space)                      # warm the page cache
            t_find = best(lambda: find_scan(dump.space))
            t_carve = best(lambda: carve_rings(dump.space))
            print(f"{Path(path).parent.name}/{Path(path).name}: {ram / 2**20:.0f} MiB RAM; "
                  f"bytes.find {ram / t_find / 1e9:.2f} GB/s, carve {ram / t_carve / 1e9:.2f} GB/s; "
                  f"carve/find speed ratio {t_find / t_carve:.3f}")


if __name__ == "__main__":
    main()

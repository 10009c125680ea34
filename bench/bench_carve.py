"""Carving speed: :func:`vdecode.virtio.carve.carve_rings` over a capture's guest RAM, as a ratio
to a plain ``bytes.find`` scan of the same RAM (a pattern that is not there), measured in the same
run, warm (the dump is read once before timing), best of three. ``bytes.find`` needs ``bytes``:
the ratio is given against the find alone and against copy + find. Carving runs on every core
(threads scanning chunks) and on one thread; the rings must be the same. (Without ``workers``
``carve_rings`` takes the cores the load average leaves free: on a busy machine, one.)

usage: bench_carve.py [DUMP ...]   (default: the shared captures' ELF dumps)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import dump as capture_dump, require_captures  # noqa: E402  (bench/ is the script's own folder)
from vdecode.cores import usable_cores  # noqa: E402
from vdecode.space.open import open_dump  # noqa: E402
from vdecode.virtio.carve import carve_rings  # noqa: E402


def best(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


NEEDLE = b"\xde\xad\xbe\xef\x01vdecode-not-here"


def find_scan(space) -> tuple[float, float]:
    """Seconds for ``bytes.find`` over all RAM in 64 MiB pieces: ``(find only, copy + find)``
    (``bytes.find`` needs a ``bytes``; the copy out of the mapped dump is timed separately)."""
    t_find = t_all = 0.0
    for start, size in space.ranges():
        off = 0
        while off < size:
            n = min(64 << 20, size - off)
            t0 = time.perf_counter()
            data = bytes(space.read(start + off, n))
            t1 = time.perf_counter()
            data.find(NEEDLE)
            t2 = time.perf_counter()
            t_find += t2 - t1
            t_all += t2 - t0
            off += n
    return t_find, t_all


def main() -> None:
    dumps = sys.argv[1:] or [str(capture_dump(n, "elf")) for n in require_captures()]
    for path in dumps:
        with open_dump(path) as dump:
            ram = sum(int(n) for _, n in dump.space.ranges())
            every = carve_rings(dump.space, workers=usable_cores())     # warm the page cache
            one = carve_rings(dump.space, workers=1)
            scans = [find_scan(dump.space) for _ in range(3)]
            t_find, t_copy_find = min(f for f, _ in scans), min(a for _, a in scans)
            t_carve = best(lambda: carve_rings(dump.space, workers=usable_cores()))
            t_one = best(lambda: carve_rings(dump.space, workers=1))
            gbs = lambda t: ram / t / 1e9                     # noqa: E731
            print(f"{Path(path).parent.name}/{Path(path).name}: {ram / 2**20:.0f} MiB RAM, "
                  f"{len(every)} rings ({'the same' if one == every else 'NOT the same'} on one "
                  f"thread and on {usable_cores()}); bytes.find {gbs(t_find):.2f} GB/s (with the "
                  f"copy out of the dump {gbs(t_copy_find):.2f} GB/s)")
            print(f"    carve {gbs(t_carve):.2f} GB/s, carve/find speed ratio {t_find / t_carve:.3f} "
                  f"(vs copy+find {t_copy_find / t_carve:.3f}); on one thread {gbs(t_one):.2f} GB/s, "
                  f"ratio {t_find / t_one:.3f}")


if __name__ == "__main__":
    main()

"""The view's queue walk (``vdecode.virtio.ring_walk.walk_queue``): every outstanding chain of
a synthetic split queue walked and checked (loops, bad ``next``, zero lengths, buffers outside
guest RAM, descriptor order) at once.

Prints, measured in this run, for a queue whose every avail entry is pending and full of
3-descriptor chains (tables from ``bench/bench_chains.py``'s ``synthetic_table``):
* the 32768-entry walk as a ratio to the 256-entry walk (the size ratio is 128);
* a plain-Python reference (``walk_chain`` per head, then the same checks per descriptor) as a
  ratio to the numpy walk at 32768.

Usage: ``python bench/bench_view.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chains import best, synthetic_table  # noqa: E402

from vdecode.space.ram_map import RamMap  # noqa: E402
from vdecode.virtio.ring_walk import walk_queue  # noqa: E402
from vdecode.virtio.chains import walk_chain  # noqa: E402
from vdecode.virtio.layouts import VRING_DESC_F_WRITE, vring_layouts  # noqa: E402
from vdecode.virtio.split_ring import AvailRing, SplitRing, UsedRing  # noqa: E402

RAM = RamMap.from_pairs([(0, 1 << 40)])


def ring_of(num: int) -> tuple[SplitRing, np.ndarray]:
    lay = vring_layouts(True)
    descs, heads = synthetic_table(num)
    ring_heads = np.zeros(num, dtype=lay.u16_dtype)
    ring_heads[:len(heads)] = heads
    avail = AvailRing(0, len(heads), ring_heads, None)
    used = UsedRing(0, 0, np.zeros(num, dtype=lay.used_elem_dtype), None)
    return SplitRing(num, descs, avail, used, lay), np.arange(len(heads), dtype=np.int64)


def reference(ring: SplitRing, idxs: np.ndarray) -> list[list[str]]:
    flags, nexts = ring.descs["flags"].tolist(), ring.descs["next"].tolist()
    addrs, lens = ring.descs["addr"].tolist(), ring.descs["len"].tolist()
    heads = ring.avail.ring.tolist()
    out = []
    for i in idxs.tolist():
        w = walk_chain(flags, nexts, heads[i % ring.num])
        probs, seen_write = [], False
        for d in w.members:
            if lens[d] == 0:
                probs.append("zero_len")
            elif not (0 <= addrs[d] and addrs[d] + lens[d] <= (1 << 40)):
                probs.append("bad_addr")
            wr = bool(flags[d] & VRING_DESC_F_WRITE)
            if seen_write and not wr:
                probs.append("order")
            seen_write |= wr
        out.append(probs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    small, small_idx = ring_of(256)
    big, big_idx = ring_of(32768)
    walk = walk_queue(None, big, big_idx, RAM)
    assert walk.problems == reference(big, big_idx)
    assert walk.length.tolist() == [3] * len(big_idx)
    t_small = best(lambda: walk_queue(None, small, small_idx, RAM), args.repeat)
    t_big = best(lambda: walk_queue(None, big, big_idx, RAM), args.repeat)
    t_ref = best(lambda: reference(big, big_idx), max(1, args.repeat // 3))
    print(f"walk_queue 256 entries ({len(small_idx)} chains):     {t_small * 1e3:9.3f} ms")
    print(f"walk_queue 32768 entries ({len(big_idx)} chains): {t_big * 1e3:9.3f} ms")
    print(f"reference walk 32768 entries:            {t_ref * 1e3:9.3f} ms")
    print(f"ratio 32768 / 256:                       {t_big / t_small:9.1f}x  (size ratio 128)")
    print(f"ratio reference / numpy at 32768:        {t_ref / t_big:9.1f}x")


if __name__ == "__main__":
    main()

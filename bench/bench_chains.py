"""Chain walking cost: a synthetic 32768-entry split queue full of 3-descriptor chains.

Prints, measured in this run:
* the numpy walk (``walk_all_chains``) of 32768 entries as a ratio to the same walk of 256 entries
  (the size ratio is 128; pointer jumping is O(n log n), so ~240 is the expected ceiling);
* the plain-Python reference walk (``walk_all_chains_reference``) of 32768 entries as a ratio to the
  numpy walk of the same table;
* ``chain_members`` for every avail head against the scalar ``walk_chain`` per head.

Usage: ``python bench/bench_chains.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vdecode.virtio.chains import (chain_members, walk_all_chains, walk_all_chains_reference,
                                   walk_chain)
from vdecode.virtio.layouts import VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, vring_layouts


def synthetic_table(num: int, chain_len: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``num`` descriptors in chains of ``chain_len`` over a shuffled slot order (like a busy
    queue's free list); returns the table and the chain heads."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(num)
    descs = np.zeros(num, dtype=vring_layouts(True).desc_dtype)
    descs["addr"] = rng.integers(0, 1 << 40, num, dtype=np.uint64) & ~np.uint64(0xFFF)
    descs["len"] = 512
    chains = order[: num - num % chain_len].reshape(-1, chain_len)
    descs["flags"][chains[:, :-1]] = VRING_DESC_F_NEXT
    descs["flags"][chains[:, -1]] = VRING_DESC_F_WRITE
    descs["next"][chains[:, :-1]] = chains[:, 1:]
    return descs, chains[:, 0]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    small, _ = synthetic_table(256)
    big, heads = synthetic_table(32768)
    assert walk_all_chains(big).length.tolist() == walk_all_chains_reference(big).length.tolist()

    t_small = best(lambda: walk_all_chains(small), args.repeat)
    t_big = best(lambda: walk_all_chains(big), args.repeat)
    t_ref = best(lambda: walk_all_chains_reference(big), max(1, args.repeat // 3))
    table = walk_all_chains(big)
    t_members = best(lambda: chain_members(big, heads, table), args.repeat)
    flags, nexts = big["flags"].tolist(), big["next"].tolist()
    t_scalar_heads = best(lambda: [walk_chain(flags, nexts, int(h)) for h in heads], max(1, args.repeat // 3))

    print(f"walk_all_chains 256 entries:       {t_small * 1e3:9.3f} ms")
    print(f"walk_all_chains 32768 entries:     {t_big * 1e3:9.3f} ms")
    print(f"reference walk 32768 entries:      {t_ref * 1e3:9.3f} ms")
    print(f"ratio numpy 32768 / numpy 256:     {t_big / t_small:9.1f}x  (size ratio 128)")
    print(f"ratio reference / numpy at 32768:  {t_ref / t_big:9.1f}x")
    print(f"chain_members, {len(heads)} heads:     {t_members * 1e3:9.3f} ms; scalar walk per head "
          f"{t_scalar_heads * 1e3:.3f} ms; ratio {t_scalar_heads / t_members:.1f}x")


if __name__ == "__main__":
    main()

"""What one ``--queue`` answer costs: it must not grow with the dump, and start-up must stay small.

Prints, measured in this run (best of ``--repeat`` wall-clock runs of the installed ``vdecode``):
* ``vdecode DUMP --log LOG --queue 0`` on a big guest dump (default: the ``big`` recording, 4.5 GiB
  of RAM, in ``$VDECODE_NEW_CAPTURES/big``; ``--big DIR`` names another) as a ratio to the same on
  the shared ``basic`` capture (160 MiB);
* ``vdecode samples/basic-core.vdb --queue 0`` as a ratio to ``python -c "import numpy"`` (start-up:
  imports, opening, one queue), in wall-clock time and in CPU time (which a machine shared with
  other jobs changes less).

Usage: ``python bench/bench_queue.py [--big DIR] [--repeat N]``
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, dump, log  # noqa: E402

VDECODE = str(Path(sys.executable).with_name("vdecode"))


# An installed wheel has its bytecode compiled; with PYTHONDONTWRITEBYTECODE set (some CI and
# container images set it) an editable checkout would recompile every changed module on every
# run and time the compiler. The first, untimed run writes the bytecode.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def best(*argvs: list[str], repeat: int, cpu: list | None = None) -> list[float]:
    """The best wall-clock time of each command over ``repeat`` rounds. The commands take turns
    within a round, so a slow spell of a shared machine slows all of them, not only the one
    measured while it lasted: the ratio is what is compared. ``cpu``, when given, gets each
    command's best CPU time (user + system), which other jobs on the machine change less."""
    for argv in argvs:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=ENV)
    times: list[list[float]] = [[] for _ in argvs]
    cpus: list[list[float]] = [[] for _ in argvs]
    for _ in range(repeat):
        for argv, into, cpu_into in zip(argvs, times, cpus):
            c0, t0 = _children_cpu(), time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=ENV)
            into.append(time.perf_counter() - t0)
            cpu_into.append(_children_cpu() - c0)
    if cpu is not None:
        cpu[:] = [min(c) for c in cpus]
    return [min(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rec = os.environ.get("VDECODE_NEW_CAPTURES")
    ap.add_argument("--big", type=Path, default=Path(rec) / "big" if rec else None,
                    help="a recording folder with dump.elf and early.jsonl")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    small = [VDECODE, str(dump("basic", "elf")), "--log", str(log("basic", "early")), "--queue", "0"]
    if a.big and (a.big / "dump.elf").exists():
        big_dump = a.big / "dump.elf"
        big = [VDECODE, str(big_dump), "--log", str(a.big / "early.jsonl"), "--queue", "0"]
        t_big, t_small = best(big, small, repeat=a.repeat)
        print(f"--queue 0: {big_dump.stat().st_size / 2**30:.1f} GiB dump {t_big * 1e3:.0f} ms, "
              f"160 MiB dump {t_small * 1e3:.0f} ms: ratio {t_big / t_small:.2f}")
    else:
        print("--queue 0 on a big dump: skipped (give --big DIR or VDECODE_NEW_CAPTURES with big/)")
    cpu: list[float] = []
    t_numpy, t_sample = best([sys.executable, "-c", "import numpy"],
                             [VDECODE, str(REPO / "samples" / "basic-core.vdb"), "--queue", "0"],
                             repeat=a.repeat, cpu=cpu)
    print(f"start-up: vdecode samples/basic-core.vdb --queue 0 {t_sample * 1e3:.0f} ms, "
          f"python -c 'import numpy' {t_numpy * 1e3:.0f} ms: ratio {t_sample / t_numpy:.2f} "
          f"(CPU time {cpu[1] * 1e3:.0f} ms vs {cpu[0] * 1e3:.0f} ms: {cpu[1] / cpu[0]:.2f})")


if __name__ == "__main__":
    main()

"""How many cores vdecode's bulk work (decoding a whole kdump, carving RAM) may use.

``VDECODE_WORKERS`` in the environment caps it (``1``: everything in one thread of one process,
as on a machine shared with other jobs); otherwise the cores this process may run on, and for
vdecode's own threads and decoding processes those the load average leaves free.
"""

from __future__ import annotations

import os

__all__ = ("usable_cores", "idle_cores")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else the count),
    capped by ``VDECODE_WORKERS`` when that is a positive integer."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        n = os.cpu_count() or 1
    cap = os.environ.get("VDECODE_WORKERS", "")
    if cap.isdigit() and int(cap) > 0:
        n = min(n, int(cap))
    return max(1, n)


def idle_cores() -> int:
    """The usable cores other work leaves free now: :func:`usable_cores` less the 1-minute load
    average beyond this process's own (at least 1). On a 2-core machine kept busy by other jobs,
    two threads scanning RAM took turns on the GIL and ran slower than one; this is the default
    for vdecode's own threads and decoding processes, not for triage's workers (``--workers``)."""
    n = usable_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):      # no load average here: assume the cores are free
        return n
    return max(1, min(n, n - round(busy) + 1))

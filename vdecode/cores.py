"""How many cores vdecode's bulk work (decoding a whole kdump, carving RAM) may use.

``VDECODE_WORKERS`` in the environment caps it (``1``: everything in one thread of one process,
as on a machine shared with other jobs); otherwise the cores this process may run on.
"""

from __future__ import annotations

import os

__all__ = ("usable_cores",)


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

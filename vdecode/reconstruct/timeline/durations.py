"""How long something took, as the trace's readers print it: one short unit each (``40us``,
``1.3ms``, ``2.0s``), so a finding's sentence and the view's chain line say the same."""

from __future__ import annotations

__all__ = ("duration_text",)


def duration_text(s: float) -> str:
    """``s`` seconds in the largest unit that keeps it short (microseconds, milliseconds, s)."""
    if s < 1e-3:
        return f"{s * 1e6:.0f}us"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.1f}s"

"""The post-mortem view as JSON: the view model of :mod:`vdecode.reconstruct.postmortem.view_model` written
with sorted-free, stable key order (the model's own order) and two-space indentation.

The schema is documented in ``docs/view-json.md``; ``schema_version`` changes when a member is
removed or changes meaning (adding members does not).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ("render_view_json",)


def render_view_json(view: dict[str, Any]) -> str:
    """One JSON document, newline-terminated."""
    return json.dumps(view, indent=2, ensure_ascii=False) + "\n"

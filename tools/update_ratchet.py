#!/usr/bin/env python3
"""Measure every capture in every mode and raise tests/reconstruct/fidelity_ratchet.json.

Only raises: a mode whose score fell keeps its old floor (and its test fails until fixed).
Run from the repository root: ``.venv/bin/python tools/update_ratchet.py``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import Capture, capture_folders  # noqa: E402
from tests.reconstruct.fidelity import RATCHET, capture_modes, score  # noqa: E402


def main() -> None:
    old = json.loads(RATCHET.read_text()) if RATCHET.exists() else {}
    new = dict(old)
    for name, dump, log in capture_modes():
        key = f"{name}/{dump}+{log}"
        s = score(Capture(capture_folders()[name]), dump, log)
        prev = old.get(key, {"fields": 0, "exact": 0})
        if (s["fields"], s["exact"]) >= (prev["fields"], prev["exact"]):
            new[key] = {"fields": s["fields"], "exact": s["exact"], "of_fields": s["total"],
                        "of_replies": s["replies"]}
        print(f"{key:32s} fields {s['fields']}/{s['total']}  exact {s['exact']}/{s['replies']}")
    RATCHET.write_text(json.dumps(dict(sorted(new.items())), indent=1) + "\n")


if __name__ == "__main__":
    main()

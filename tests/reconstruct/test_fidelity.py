"""Every capture's truth replayed through ``vdecode qmp`` in every (dump, log) mode.

A mode may never score below what ``fidelity_ratchet.json`` records for it, so fidelity only goes
up: raise the numbers there when a change improves them.
"""

import json

import pytest

from tests.conftest import CAPTURES, capture_names
from tests.reconstruct.fidelity import RATCHET, score


def _modes():
    out = []
    for name in capture_names():
        manifest = json.loads((CAPTURES / name / "case.json").read_text())
        for dump in manifest["dumps"]:
            for log in ("instant", "early", "none"):
                if log != "none" and log not in manifest["logs"]:
                    continue
                if log == "instant" and dump != "elf":
                    continue
                out.append((name, dump, log))
    return out


@pytest.mark.parametrize("name,dump,log", _modes())
def test_mode_does_not_drop_below_its_ratchet(captures, name, dump, log):
    ratchet = json.loads(RATCHET.read_text())
    key = f"{name}/{dump}+{log}"
    s = score(captures[name], dump, log)
    floor = ratchet.get(key, {"fields": 0, "exact": 0})
    assert (s["fields"], s["exact"]) >= (floor["fields"], floor["exact"]), (key, s)
    if log == "instant":
        # the log holds QEMU's replies at the dump instant: nothing may be missed
        assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-500:]


"""Every capture's truth replayed through ``vdecode qmp`` in every (dump, log) mode.

A mode may never score below what ``fidelity_ratchet.json`` records for it, so fidelity only goes
up: raise the numbers there when a change improves them.
"""

import json

import pytest

from tests.reconstruct.fidelity import RATCHET, capture_modes, score


@pytest.mark.parametrize("name,dump,log", capture_modes())
def test_mode_does_not_drop_below_its_ratchet(captures, name, dump, log):
    ratchet = json.loads(RATCHET.read_text())
    key = f"{name}/{dump}+{log}"
    s = score(captures[name], dump, log)
    floor = ratchet.get(key, {"fields": 0, "exact": 0})
    assert (s["fields"], s["exact"]) >= (floor["fields"], floor["exact"]), (key, s)
    if log == "instant":
        # the log holds QEMU's replies at the dump instant: nothing may be missed
        assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-500:]


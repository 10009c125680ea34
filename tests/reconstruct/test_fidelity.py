"""Every capture's truth replayed through ``vdecode qmp`` in every (dump, log) mode.

A mode may never score below what ``fidelity_ratchet.json`` records for it, so fidelity only goes
up: raise the numbers there when a change improves them.
"""

import json

import pytest

from tests.reconstruct.fidelity import RATCHET, capture_mode_params, not_guessed, score


@pytest.mark.parametrize("name,dump,log", capture_mode_params())
def test_mode_does_not_drop_below_its_ratchet(captures, name, dump, log):
    ratchet = json.loads(RATCHET.read_text())
    key = f"{name}/{dump}+{log}"
    # a mode without a floor is a new capture or mode: add its measured score to the ratchet file
    assert key in ratchet, f"{key} has no floor in {RATCHET.name}"
    floor = ratchet[key]
    s = score(captures[name], dump, log)
    assert (s["total"], s["replies"]) == (floor["of_fields"], floor["of_replies"]), (key, s)
    # each measure on its own: a gain in one must not hide a loss in the other
    assert s["fields"] >= floor["fields"], (key, s["fields"], floor)
    assert s["exact"] >= floor["exact"], (key, s["exact"], floor)
    if log == "none" and dump != "qemu-core":
        # a guest dump alone: every reply QEMU's (what needs no state) or an honest refusal
        assert not not_guessed(s["unlike"]), not_guessed(s["unlike"])[:3]
    if log == "instant":
        # the log holds QEMU's replies at the dump instant: nothing may be missed
        assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-500:]


"""Real QEMU 7.2 captures beyond the shared two, kept as small ``vdecode bundle`` fixtures.

``tests/data/captures/<name>/`` holds what ``tools/capture/make_fixtures.py`` made from a capture
recorded with ``tools/capture/`` (index wrap, driver reset, reboot, guest panic, other devices,
multiqueue net, vhost-user-blk, ...; see ``docs/new-captures.md``): QEMU's replies at the frozen
instant (``truth.json``) and one zstd-compressed bundle per (dump, log) mode, the log inside it.
Each mode's score may never fall below ``new_captures_ratchet.json``; an ``instant`` bundle (the
log holds QEMU's replies at the dump instant) must answer every reply exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reconstruct.fidelity import fixture_cases, score_fixture

DATA = Path(__file__).resolve().parent.parent / "data" / "captures"
RATCHET = Path(__file__).with_name("new_captures_ratchet.json")


def _cases() -> list[tuple[str, str]]:
    return fixture_cases(DATA)


pytestmark = pytest.mark.usefixtures("bundle_cache")


def _score(name: str, mode: str) -> dict:
    return score_fixture(DATA, name, mode)


def test_fixtures_are_small():
    sizes = [p.stat().st_size for p in DATA.rglob("*") if p.is_file()]
    assert max(sizes, default=0) < 1_000_000
    assert sum(sizes) < 10_000_000


def test_every_fixture_mode_has_a_ratchet():
    ratchet = json.loads(RATCHET.read_text())
    assert sorted(f"{n}/{m}" for n, m in _cases()) == sorted(ratchet)


@pytest.mark.parametrize("name,mode", _cases())
def test_bundle_does_not_drop_below_its_ratchet(name, mode):
    floor = json.loads(RATCHET.read_text())[f"{name}/{mode}"]
    s = _score(name, mode)
    assert s["total"] == floor["of_fields"] and s["replies"] == floor["of_replies"]
    assert s["fields"] >= floor["fields"] and s["exact"] >= floor["exact"], (name, mode, s)
    if mode.endswith("+instant"):
        assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-500:]

"""A build's own strings learned from a log: one string the tables do not hold must not stop
every answer (Debian's QEMU 10.0.13 prints ``VIRTIO_NET_F_GUEST_USO6: Driver can receive USOv6``
where 10.0.2, whose tables we ship, printed ``…_USO4: …``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.reconstruct.fidelity import score_args
from vdecode.profiles import load_profile
from vdecode.reconstruct.qmp.features import features_from_reply, features_to_reply
from vdecode.reconstruct.state.labels import learn_labels
from vdecode.sources.qmp_log.knowledge import LogKnowledge
from vdecode.sources.qmp_log.model import LoggedMonitor, QmpExchange

DATA = Path(__file__).resolve().parent.parent / "data" / "captures-10.0"
OLD = "VIRTIO_NET_F_GUEST_USO4: Driver can receive USOv6"
NEW = "VIRTIO_NET_F_GUEST_USO6: Driver can receive USOv6"


def _knowledge(*replies: dict) -> LogKnowledge:
    m = LoggedMonitor(key="")
    for i, r in enumerate(replies):
        m.exchanges.append(QmpExchange({"execute": "x-query-virtio-status",
                                        "arguments": {"path": f"/p{i}"}}, {"return": r},
                                       line=2 * i + 1, line_reply=2 * i + 2))
    return LogKnowledge(m)


def _net_reply(profile, bitmap: int, rename: dict[str, str]) -> dict:
    feats = features_to_reply(profile, 1, bitmap)
    feats["dev-features"] = [rename.get(s, s) for s in feats["dev-features"]]
    return {"device-id": 1, "host-features": feats}


@pytest.mark.parametrize("mode", ["elf+early", "qemu-core+early"])
def test_a_relabelled_real_log_is_learned_and_exact(tmp_path, mode):
    """The real 10.0.2 netmq recording with bit 55 printed the 10.0.13 way, in the log and in
    QEMU's replies alike: every reply exact, and a note says what was learned and how."""
    case = tmp_path / "netmq"
    shutil.copytree(DATA / "netmq", case)
    for name in ("early.jsonl", "truth.json"):
        text = (case / name).read_text()
        assert OLD in text
        (case / name).write_text(text.replace(OLD, NEW))
    manifest = json.loads((case / "case.json").read_text())
    truth = json.loads((case / "truth.json").read_text())["exchanges"]
    s = score_args(truth, [str(case / manifest["bundles"][mode]), "--log",
                           str(case / "early.jsonl")])
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-800:]
    assert f"this QEMU prints {NEW!r} for device id 1 bit 55 (by same description" in s["stderr"]


def test_placed_by_position_when_name_and_text_both_changed():
    profile = load_profile("10.0")
    bitmap = (1 << 54) | (1 << 55) | (1 << 56) | (1 << 5)
    renamed = {OLD: "VIRTIO_NET_F_SOMETHING_ELSE: entirely new words"}
    k = _knowledge(_net_reply(profile, bitmap, renamed))
    learned, notes = learn_labels(k, profile, "x.jsonl")
    (lab,) = learned.learned
    assert (lab.section, lab.key, lab.how) == ("devices/1", 55, "position")
    assert "x.jsonl line 2" in notes[0] and "by position" in notes[0]
    # the learned profile reads the reply back into the same bits and prints the build's string
    reply = k.all("x-query-virtio-status")[0].reply["return"]["host-features"]
    assert features_from_reply(learned, 1, reply) == bitmap
    assert features_to_reply(learned, 1, bitmap) == reply
    # and the shipped table itself is untouched (it is shared by every answer)
    assert OLD in [r["desc"] for r in profile.table("features")["devices"]["1"]["rows"]]


def test_a_string_nothing_places_is_left_out_and_said():
    """Rows 54, 55 and 56 all printed, so no free row lies beside the new string: no evidence, so
    it is not guessed into a bit; the other bits still read back, and a note says so."""
    profile = load_profile("10.0")
    bitmap = (1 << 54) | (1 << 55) | (1 << 56)
    reply = _net_reply(profile, bitmap, {})
    reply["host-features"]["dev-features"].insert(1, "VIRTIO_NET_F_NEW_THING: unheard of")
    learned, notes = learn_labels(_knowledge(reply), profile)
    (lab,) = learned.learned
    assert lab.key is None
    assert "no evidence places" in notes[0]
    assert features_from_reply(learned, 1, reply["host-features"]) == bitmap


def test_a_log_with_only_known_strings_changes_nothing():
    profile = load_profile("10.0")
    k = _knowledge(_net_reply(profile, (1 << 55) | 1, {}))
    assert learn_labels(k, profile) == (profile, [])
    assert learn_labels(None, profile) == (profile, [])


def test_labels_the_executable_gave_are_kept_when_the_log_teaches_more():
    """A core of a build no profile knows (QEMU 10.2.2 built here) relabels bit 55 from its
    executable; its log prints that string and one no row places. The log's lesson is added to
    the executable's, not put in its place (it was: the executable's USO6 was lost and the
    log's USO6 then had no bit, refusing every answer)."""
    from dataclasses import replace

    from vdecode.profiles import LearnedLabel

    base = load_profile("10.0")
    exe = LearnedLabel("devices/1", 55, NEW, "the executable's table", "qemu-system-x86_64")
    profile = replace(base, learned=(exe,))
    bitmap = (1 << 55) | (1 << 5)
    reply = _net_reply(profile, bitmap, {})
    assert NEW in reply["host-features"]["dev-features"]
    reply["host-features"]["dev-features"].insert(0, "VIRTIO_NET_F_NEW_THING: unheard of")
    learned, notes = learn_labels(_knowledge(reply), profile)
    assert learned.learned[0] == exe and [lab.key for lab in learned.learned[1:]] == [None]
    assert features_from_reply(learned, 1, reply["host-features"]) == bitmap

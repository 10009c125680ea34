"""A 16-bit index wrap told from a step back or a reset by evidence (issue 24).

On the real wrap recordings (QEMU 7.2 and 10.0 fixtures: virtio-rng queues of 8 whose used idx
passed 65535 between the early log and the dump) the view must say "forward, wrapped" with the
evidence it used, once per queue, and triage must not file the VM under ``idx-backwards``;
synthetic rings give the step back, the reset and the case the evidence cannot decide.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.reconstruct.test_findings import PATH, blk_chain, machine
from vdecode.reconstruct.postmortem.findings import find_findings
from vdecode.reconstruct.postmortem.index_motion import (Pace, judge_motion, log_pace)
from vdecode.reconstruct.state.session import build_session, open_inputs
from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState, VirtQueueState
from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log
from vdecode.virtio.layouts import vring_layouts

DATA = Path(__file__).resolve().parent.parent / "data"
INDEX_CODES = {"idx-advanced", "idx-backwards", "idx-reset", "idx-ambiguous"}
RNG = "/machine/peripheral/{}/virtio-backend"

pytestmark = pytest.mark.usefixtures("bundle_cache")


def _findings(folder: Path, mode: str):
    inputs = open_inputs(folder / f"{mode}.vdb.zst")
    with inputs.dump:
        s = build_session(inputs)
        found, _ = find_findings(s.machine, s.profile, s.logged, s.log_end,
                                 pace=log_pace(s.knowledge))
    return found


def _by_queue(found) -> dict[tuple[str, int], list]:
    out: dict[tuple[str, int], list] = {}
    for f in found:
        if f.code in INDEX_CODES:
            out.setdefault((f.device, f.queue), []).append(f)
    return out


@pytest.mark.parametrize("mode", ["elf+early", "kdump-zlib+early", "qemu-core+early"])
def test_the_7_2_wrap_recording_reads_forward_with_its_evidence(mode):
    found = _findings(DATA / "captures" / "wrap", mode)
    assert not [f for f in found if f.code == "idx-backwards" or f.severity != "info"]
    by_queue = _by_queue(found)
    assert all(len(fs) == 1 for fs in by_queue.values())           # never two that contradict
    for name, log_used, used in (("rngsplit", 30005, 4474), ("rnglegacy", 30002, 4470)):
        [f] = by_queue[(RNG.format(name), 0)]
        assert f.code == "idx-advanced" and f.evidence["reading"] == "forward"
        assert f.title == (f"{(used - log_used) % 65536} completion(s) since the log "
                           f"(used idx {log_used} -> {used}, wrapped)")
        assert f.evidence["forward_reading"] == 65536 + used - log_used
        assert f.evidence["back_reading"] == log_used - used
        why = " ".join(f.evidence["why"])
        assert f"used idx {used} moved with avail idx {used} (0 outstanding)" in why
        assert "no sign of a reset" in why and "every used slot has been written" in why
    # the packed ring's logged index is a position in the ring: nothing is claimed about it
    assert (RNG.format("rngpacked"), 0) not in by_queue


@pytest.mark.parametrize("folder", ["captures/wrapblk", "captures-10.0/wrap", "captures-10.0/wrapblk",
                                    "captures/reset", "captures/resetstale"])
def test_the_other_recordings_keep_one_plain_finding_per_queue(folder):
    found = _findings(DATA / folder, "elf+early")
    for fs in _by_queue(found).values():
        assert len(fs) == 1 and fs[0].code == "idx-advanced" and "reading" not in fs[0].evidence
    if "reset" in folder:             # the reset moved the rings: said so, not "went back"
        assert {f.device.split("/")[-2] for f in found if f.code == "rings-relocated"} == {"rng0", "blk0"}


def test_triage_does_not_file_the_wrap_under_idx_backwards():
    from vdecode.triage.discover import VmJob
    from vdecode.triage.record import triage_vm, verdict_of

    rec = triage_vm(VmJob("wrap", dumps=((str(DATA / "captures" / "wrap" / "elf+early.vdb.zst"),
                                          "bundle"),)))
    assert verdict_of(rec) == "ok"
    assert "idx-backwards" not in json.dumps(rec)


# --- synthetic: the evidence says back, reset, or nothing decides ------------------------------

def _logged(m, *, used_idx, avail_idx, as_of=None):
    q = m.state.devices[0].queues[0]
    return QemuVirtioState([VirtIODeviceState(PATH, queues={0: VirtQueueState(
        0, desc=q.desc, avail=q.avail, used=q.used, used_idx=used_idx, shadow_avail_idx=avail_idx,
        as_of=as_of)})])


def test_avail_behind_what_the_device_completed_went_back():
    """Log: avail 5, used 1 (4 outstanding). Dump: avail 1, used 1. Read forward, the driver
    would have made 65532 more available while the device completed none: it went back."""
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=1, used=[(0, 1)])
    found, _ = find_findings(m, load_7_2(), _logged(m, used_idx=1, avail_idx=5))
    [f] = [f for f in found if f.code in INDEX_CODES]
    assert f.code == "idx-backwards" and f.severity == "warning"
    assert f.title == "avail idx went back from 5 (log) to 1"
    assert f.evidence["reading"] == "back" and f.evidence["back_reading"] == 4
    assert f.evidence["why"] == ["used idx unchanged at 1 with 4 outstanding at the log and 0 now: "
                                 "the avail idx could be ahead only after 65536 more completions"]


def test_avail_behind_the_used_idx_went_back():
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=7, used=[(0, 1)])    # avail idx 1
    found, _ = find_findings(m, load_7_2(), _logged(m, used_idx=7, avail_idx=7))
    [f] = [f for f in found if f.code in INDEX_CODES]
    assert f.code == "idx-backwards" and "6 behind the used idx 7" in f.evidence["why"][0]


def test_a_fresh_used_ring_after_the_log_is_a_reset_not_a_step_back():
    """Log: used 30005. Dump: used 3, slots 3..7 never written: the queue restarted."""
    m = machine(blk_chain(0), [0] * 3, last_avail=3, used_idx=3, used=[(0, 1)] * 3)
    found, _ = find_findings(m, load_7_2(), _logged(m, used_idx=30005, avail_idx=30005))
    [f] = [f for f in found if f.code in INDEX_CODES]
    assert (f.code, f.severity, f.evidence["reading"]) == ("idx-reset", "info", "reset")
    assert f.title == "indices restarted since the log (used idx 30005 -> 3): a device reset"
    assert f.evidence["why"] == ["used ring slots 3..7 were never written: a ring allocated since "
                                 "the log, as after a reset"]


def test_when_the_evidence_disagrees_one_finding_gives_both_readings():
    """A fresh-looking used ring says reset; the log's pace up to the stop says a wrap."""
    m = machine(blk_chain(0), [0] * 3, last_avail=3, used_idx=3, used=[(0, 1)] * 3)
    logged = _logged(m, used_idx=30005, avail_idx=30005, as_of=1000.0)
    pace = {(PATH, 0): Pace(5000.0, 10, 990.0, 1000.0, stop=1007.0)}     # ~35,000 by the stop
    found, _ = find_findings(m, load_7_2(), logged, pace=pace)
    index = [f for f in found if f.code in INDEX_CODES]
    assert len(index) == 1
    [f] = index
    assert f.code == "idx-ambiguous" and f.severity == "info"
    assert f.title == ("used idx 30005 (log) -> 3: 35534 forward (wrapped) or 30002 back (reset); "
                       "the evidence disagrees")
    why = f.evidence["why"]
    assert any("predict about 35000, as the 35534 of a wrap" in w for w in why)
    assert any("slots 3..7 were never written" in w for w in why)


def test_the_pace_alone_can_refute_a_wrap():
    pace = Pace(10.0, 5, 900.0, 1000.0, stop=1010.0)               # ~100 completions, not 40005
    m = judge_motion(log_avail=30005, log_used=30005, avail=4474, used=4474, num=8, pace=pace,
                     log_time=1000.0)
    assert m.verdict == "reset" and "far fewer than the 40005 a wrap needs" in m.why[0]
    m = judge_motion(log_avail=30005, log_used=30005, avail=4474, used=4474, num=8,
                     pace=Pace(5000.0, 5, 900.0, 1000.0, stop=1008.0), log_time=1000.0)
    assert m.verdict == "forward" and "predict about 40000" in m.why[1]


def test_the_pace_finds_whole_cycles_the_indices_cannot_show():
    """The wrap recording's blk16: used idx 70 -> 1278 reads as 1208, but at ~8760/s for 7.6 s
    to the stop it was 65536 more."""
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=1278, avail_idx=1278, used=[(0, 1)])
    logged = _logged(m, used_idx=70, avail_idx=70, as_of=1000.0)
    pace = {(PATH, 0): Pace(8760.0, 2, 990.0, 1000.0, stop=1007.6)}
    m = m.with_state(m.state.with_device(m.state.devices[0].with_queue(
        m.state.devices[0].queues[0].evolve(last_avail_idx=1278))))
    found, _ = find_findings(m, load_7_2(), logged, pace=pace)
    [f] = [f for f in found if f.code in INDEX_CODES]
    assert f.title == "66744 completion(s) since the log (used idx 70 -> 1278, wrapped)"
    assert f.evidence["why"][0].endswith("predict about 66576: 1 more cycle(s) of 65536 than the "
                                         "used idx shows (70 -> 1278)")
    found, _ = find_findings(m, load_7_2(), logged)                   # no pace: what it shows
    [f] = [f for f in found if f.code in INDEX_CODES]
    assert f.title == "1208 completion(s) since the log (used idx 70 -> 1278)"


def test_half_a_cycle_forward_without_passing_65535_is_not_called_a_wrap():
    m = judge_motion(log_avail=100, log_used=100, avail=40000, used=40000, num=8)
    assert m.verdict == "forward" and m.forward == 39900 and not m.wrapped(100)
    m = judge_motion(log_avail=30005, log_used=30005, avail=4474, used=4474, num=8)
    assert m.verdict == "forward" and m.wrapped(30005)


def test_plain_progress_is_left_to_the_usual_finding():
    assert judge_motion(log_avail=10, log_used=8, avail=20, used=20, num=8) is None
    assert judge_motion(log_avail=65530, log_used=65530, avail=4, used=4, num=8) is None


def test_the_pace_of_a_log_and_its_stop(tmp_path):
    """Samples 1 s apart (one step past 65535), then STOP: a rate, unwrapped; a step of half a
    cycle or more starts the run again."""
    path = tmp_path / "pace.jsonl"
    args = {"path": PATH, "queue": 0}
    lines, used = [], [65000, 200, 1400, 2600]
    for i, u in enumerate(used):
        lines.append({"t": 100.0 + i, "dir": "->", "msg": {
            "execute": "x-query-virtio-queue-status", "arguments": args, "id": i}})
        lines.append({"t": 100.0 + i, "dir": "<-", "msg": {"id": i, "return": {
            "used-idx": u, "vring-desc": 4096, "vring-avail": 8192, "vring-used": 12288}}})
    lines.append({"t": 110.0, "dir": "<-", "msg": {"event": "STOP", "data": {},
                                                    "timestamp": {"seconds": 110, "microseconds": 0}}})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    k = LogKnowledge.from_log(read_qmp_log(str(path), None, None))
    [(key, p)] = log_pace(k).items()
    assert key == (PATH, 0) and (p.samples, p.first, p.last, p.stop) == (4, 100.0, 103.0, 110.0)
    assert p.rate == pytest.approx((736 + 1200 + 1200) / 3)
    # what the view reads (latest-only) keeps the newest two: their step is the pace
    k = LogKnowledge.from_log(read_qmp_log(str(path), None, None, latest_only=True))
    p = log_pace(k)[(PATH, 0)]
    assert (p.samples, p.first, p.last, p.stop, p.rate) == (2, 102.0, 103.0, 110.0, 1200.0)
    path.write_text(path.read_text().replace('"used-idx": 1400', '"used-idx": 40000'))
    k = LogKnowledge.from_log(read_qmp_log(str(path), None, None))
    assert log_pace(k)[(PATH, 0)].samples == 2          # 200 -> 40000: the run starts at 40000


def load_7_2():
    from vdecode.profiles import load_profile
    return load_profile("7.2")


def test_used_ring_of_a_real_layout_is_what_the_judge_reads():
    """The used ring the findings pass is the structured array with ``id`` and ``len``."""
    ring = np.zeros(8, vring_layouts(True).used_elem_dtype)
    ring["len"][:3] = 64
    assert judge_motion(log_avail=100, log_used=100, avail=3, used=3, num=8,
                        used_ring=ring).verdict == "reset"
    ring["len"][3:] = 64                  # written before: no sign of a reset, a wrap
    assert judge_motion(log_avail=100, log_used=100, avail=3, used=3, num=8,
                        used_ring=ring).verdict == "forward"

"""``vdecode DUMP --trace TRACE``: a QEMU trace joined to the dump of the same run.

Three real runs of Debian's QEMU 7.2 (TCG), traced with the recorder's ``"trace"`` key
(``tests/data/traces``): ``tracepanic`` and ``tracereset`` (a guest panic while a throttled
virtio-blk held 1 and 3 writes, which QEMU's pause completed), and ``traceinflight``
(``traceinflight.scenario.json``: the same with a virtio-balloon, whose stats request QEMU holds
into the dump). Each dump is here as the bundle ``vdecode bundle`` wrote from the run's QEMU core
and guest ELF dump (the cores are 40 MB); a bundle names no QEMU address, so the trace's devices
are tied by their counts. The core path runs on the addresses and the ``VirtQueueElement`` bytes
the run's core held (``*.truth.json``: ``queue_arrays``, ``elements_at_stop``), and on the core
itself where the recordings are at hand (``VDECODE_TRACE_RUNS``, default ``../rec/trace/out``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

import vdecode
from vdecode.cli import cli
from vdecode.reconstruct.postmortem.trace_join import join_trace, trace_findings
from vdecode.reconstruct.timeline.queues import build_timeline
from vdecode.sources.trace import read_trace

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"
RUNS = Path(os.environ.get("VDECODE_TRACE_RUNS",
                           Path(__file__).resolve().parents[3] / "rec" / "trace" / "out"))
BLK0 = "/machine/peripheral/blk0/virtio-backend"
BALLOON = "/machine/peripheral/balloon0/virtio-backend"
HELD = {"tracepanic": 1, "tracereset": 3}          # the writes the pause completed (the runs')


def bundle(case: str) -> str:
    return str(DATA / f"{case}.vdb.zst")


def trace(case: str) -> str:
    return str(DATA / f"{case}.log.zst")


def truth(case: str) -> dict:
    return json.loads((DATA / f"{case}.truth.json").read_text())


def raw(case: str) -> bytes:
    with open(trace(case), "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


@pytest.mark.parametrize("case", sorted(HELD))
def test_the_pause_completed_what_the_throttled_disk_held(case):
    with vdecode.open(bundle(case), trace=trace(case)) as m:
        join = m.trace
        assert join.matched_by == "counts"
        # every queue of the dump the trace tied agrees with QEMU's inuse at stop
        assert join.queues and all(q.agrees for q in join.queues)
        inuse = truth(case)["inuse_at_stop"]
        assert {f"{q.path} {q.queue}": q.dump_inuse for q in join.queues}.items() <= inuse.items()
        (f,) = [f for f in m.findings if f.code == "trace-completed-by-pause"]
        n = HELD[case]
        assert (f.device, f.queue, f.severity) == (BLK0, 0, "info")
        assert f.title.startswith(f"{n} request{'s' if n > 1 else ''} "
                                  f"{'was' if n == 1 else 'were'} in flight when the VM paused "
                                  f"(guest-panicked); the pause completed")
        els = f.evidence["elements"]
        assert len(els) == n
        pause = f.evidence["paused_at"]
        blk = m.queue(BLK0, 0)
        used = {u.used_idx: u for u in blk.used_entries}
        for e in els:
            assert e["popped_at"] < pause < e["returned_at"] and e["before_pause_s"] > 0
            assert e["request"].startswith("virtio_blk_handle_write ")
            # pop order and fill position agree with the dump's rings: the head the avail ring
            # holds at the element's avail index is the id QEMU wrote at its used index
            assert e["used_agrees"] is True and e["tied_by"] == "pop order"
            assert used[e["used_idx"]].id == e["head"] and used[e["used_idx"]].len == e["len"]
            assert blk.indices.last_avail_idx - HELD[case] <= e["avail_idx"] < blk.indices.last_avail_idx
        view = m.view(BLK0, 0, show_all=True)
        marked = [u for u in view.queue_detail[0].used_entries if u.returned is not None]
        assert sorted(u.used_idx for u in marked) == sorted(e["used_idx"] for e in els)
        assert all(u.returned.to_json_obj() in els for u in marked)
        assert view.trace.pause_reason == "guest-panicked"
        assert view.to_json_obj()["trace"]["pause"]["reason"] == "guest-panicked"


def test_a_request_held_into_the_dump_says_when_it_was_taken():
    with vdecode.open(bundle("traceinflight"), trace=trace("traceinflight")) as m:
        (f,) = [f for f in m.findings if f.code.startswith("trace-")]
        assert (f.code, f.device, f.queue) == ("trace-in-flight", BALLOON, 2)
        assert f.title == "1 request in flight at the dump, taken 8.9s before the pause"
        q = m.queue(BALLOON, 2)
        assert q.inflight == 1
        (chain,) = [c for c in q.chains if c.state == "in-flight"]
        assert chain.taken is not None         # the API's queue is marked as the view's
        (detail,) = m.view(BALLOON, 2).queue_detail
        (c,) = [c for c in detail.chains if c.state == "in-flight"]
        taken = c.taken
        assert (taken.avail_idx, taken.head, taken.tied_by) == (chain.avail_idx, chain.head,
                                                                "pop order")
        assert f"{taken.elem:#x}" in truth("traceinflight")["elements_at_stop"]
        assert taken.out_num == len(chain.descriptors) and taken.in_num == 0
        assert taken.before_pause_s == pytest.approx(8.865, abs=1e-3)
        assert detail.trace.in_flight == 1 and detail.trace.agrees is True
    out = CliRunner().invoke(cli, [bundle("traceinflight"), "--trace", trace("traceinflight"),
                                   "--device", "balloon0", "--queue", "2", "-v"])
    assert out.exit_code == 0, out.output
    assert "trace: elem 0x7f8da002a9a0 avail idx 0 head 0 (pop order): taken 8.9s before the " \
           "pause (line 1467, 1 out + 0 in)" in " ".join(out.output.split())
    assert max(map(len, out.output.splitlines())) <= 80


def _core_join(case: str, text: bytes | None = None, elements: dict | None = None, tmp=None):
    """The join as a QEMU core of the run makes it: its addresses name the devices, its memory
    holds each in-flight ``VirtQueueElement`` (the bytes the run's core held)."""
    t = truth(case)
    devices = {int(v, 16): (p, int(a, 16)) for p, v, a, _ in t["queue_arrays"]}
    path = trace(case)
    if text is not None:
        path = tmp / "trace.log"
        path.write_bytes(text)
    held = {int(k, 16): bytes.fromhex(v)
            for k, v in (elements if elements is not None else t.get("elements_at_stop", {})).items()}

    def host_read(addr: int, n: int) -> bytes:
        if addr not in held:
            raise vdecode.errors.MissingData("core", f"{addr:#x} not held")
        return held[addr][:n]
    timeline = build_timeline(read_trace(path), devices=devices, vq_size=t["queue_arrays"][0][3])
    with vdecode.open(bundle(case)) as m:
        from vdecode.reconstruct.postmortem.findings import read_queue
        rings = {(d.canonical_path, qi): read_queue(m.session.machine, d, q)
                 for d in m.session.machine.state.devices for qi, q in d.queues.items()
                 if q.vring_num and q.desc}
        return join_trace(timeline, m.session.machine.state, rings, host_read=host_read)


def test_a_core_ties_the_element_by_its_own_index():
    join = _core_join("traceinflight")
    assert join.matched_by == "core"
    (t,) = join.queue(BALLOON, 2).in_flight
    assert (t.head, t.tied_by, t.avail_idx) == (0, "core", 0)
    # bytes that are not the element (its in/out counts differ): the pop order decides
    bad = {k: "07000000" + v[8:24] + "09000000" for k, v in truth("traceinflight")["elements_at_stop"].items()}
    (t,) = _core_join("traceinflight", elements=bad).queue(BALLOON, 2).in_flight
    assert (t.head, t.tied_by) == (0, "pop order")


def test_a_trace_that_does_not_end_at_the_dump_is_not_tied(tmp_path):
    """Cut at the pop of the first write the pause later completed: the trace ends with it in
    flight, the dump has inuse 0. The queue is said to disagree and nothing of it is tied."""
    text = raw("tracepanic")
    lines = text.split(b"\n")
    cut = next(i for i, ln in enumerate(lines) if b"virtqueue_pop vq 0x7f9bf1e96010" in ln
               and i > 49000)
    join = _core_join("tracepanic", b"\n".join(lines[:cut + 1]) + b"\n", tmp=tmp_path)
    blk = join.queue(BLK0, 0)
    assert blk.agrees is False and all(t.avail_idx is None for t in blk.in_flight)
    (f,) = [f for f in trace_findings(join) if f.code == "trace-disagrees"]
    assert (f.device, f.queue, f.severity) == (BLK0, 0, "warning")
    assert f.evidence["trace_in_flight"] == 1 and f.evidence["inuse"] == 0


def test_another_runs_trace_ties_nothing():
    with vdecode.open(bundle("tracepanic"), trace=trace("tracereset")) as m:
        assert m.trace.matched_by == "none" and m.trace.queues == ()
        assert not [f for f in m.findings if f.code.startswith("trace-")]
        assert any("could not be tied" in n for n in m.view().trace.notes)


def test_without_timestamps_the_join_says_lines(tmp_path):
    plain = tmp_path / "trace.log"
    plain.write_bytes(re.sub(rb"(?m)^\d+@\d+\.\d+:", b"", raw("tracereset")))
    with vdecode.open(bundle("tracereset"), trace=plain) as m:
        (f,) = [f for f in m.findings if f.code == "trace-completed-by-pause"]
        els = f.evidence["elements"]
        assert len(els) == 3 and all(e["popped_at"] is None and e["before_pause_s"] is None
                                     and e["line"] < f.evidence["pause_line"] for e in els)
        assert all(e["used_agrees"] for e in els)          # the order needs no clock
        notes = m.view().trace.notes
        assert any("no timestamps" in n for n in notes)
    out = CliRunner().invoke(cli, [bundle("tracereset"), "--trace", str(plain), "-v"])
    assert out.exit_code == 0, out.output
    assert "taken at trace line" in out.output


def test_json_has_the_trace_and_without_it_the_view_is_unchanged():
    plain = CliRunner().invoke(cli, [bundle("tracepanic"), "--json"])
    joined = CliRunner().invoke(cli, [bundle("tracepanic"), "--json", "--trace", trace("tracepanic")])
    assert plain.exit_code == joined.exit_code == 0
    a, b = json.loads(plain.output), json.loads(joined.output)
    assert "trace" not in a and b["trace"]["matched_by"] == "counts"
    assert {q["device"] for q in b["trace"]["queues"]} == {d["path"] for d in b["devices"]}
    assert [f for f in b["findings"] if not f["code"].startswith("trace-")] == a["findings"]
    with vdecode.open(bundle("tracepanic"), trace=trace("tracepanic")) as m:
        assert m.view().to_json() == joined.output


def test_a_bad_trace_is_one_line(tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_text("nothing here\n")
    r = subprocess.run([sys.executable, "-m", "vdecode", bundle("tracepanic"), "--trace", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"vdecode: error: {bad}: ")


@pytest.mark.skipif(not (RUNS / "traceinflight" / "qemu.core.zst").exists(),
                    reason=f"needs the traced runs' QEMU cores in {RUNS} (VDECODE_TRACE_RUNS=DIR)")
def test_the_runs_own_core_and_dump(tmp_path):
    run = RUNS / "traceinflight"
    paths = []
    for name in ("qemu.core", "dump.elf"):
        out = tmp_path / name
        with open(run / f"{name}.zst", "rb") as src, open(out, "wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
        paths.append(out)
    with vdecode.open(*paths, trace=run / "trace.log.zst") as m:
        assert m.trace.matched_by == "core"
        (t,) = m.trace.queue(BALLOON, 2).in_flight
        assert (t.head, t.tied_by) == (0, "core")
        assert all(q.agrees for q in m.trace.queues)
        inuse = truth("traceinflight")["inuse_at_stop"]
        # every queue the trace saw used (balloon's inflate and deflate queues never were)
        assert {f"{q.path} {q.queue}": q.dump_inuse for q in m.trace.queues}.items() <= inuse.items()
        assert len(m.trace.queues) == len(inuse) - 2


def test_the_held_request_run_in_flight_is_qemus_inuse_on_every_queue():
    """The issue's check on the third run: with the core's addresses, the trace's in flight at its
    end is QEMU's inuse at stop on every queue, and the balloon's request was held at the pause."""
    t = truth("traceinflight")
    devices = {int(v, 16): (p, int(a, 16)) for p, v, a, _ in t["queue_arrays"]}
    tl = build_timeline(read_trace(trace("traceinflight")), devices=devices,
                        vq_size=t["queue_arrays"][0][3])
    got = {f"{q.path} {q.queue}": len(q.in_flight) for q in tl.queues}
    assert got.items() <= t["inuse_at_stop"].items() and len(got) >= 11
    assert {k: v for k, v in t["inuse_at_stop"].items() if v} == {f"{BALLOON} 2": 1}
    (balloon,) = [q for q in tl.queues if q.path == BALLOON]
    assert len(balloon.in_flight_at_pause) == 1 and balloon.completed_after_pause == 0


# --- the tie rules on a small trace by hand ---------------------------------------------------

HAND = """\
1@10.000000:virtio_set_status vdev 0x10 val 0
1@10.000001:virtio_set_status vdev 0x20 val 0
1@10.100000:virtio_queue_notify vdev 0x10 n 0 vq 0x1000
1@10.100001:virtio_queue_notify vdev 0x20 n 0 vq 0x2000
1@10.200000:virtqueue_pop vq 0x1000 elem 0xa0 in_num 1 out_num 1
1@10.200001:virtqueue_pop vq 0x1000 elem 0xa1 in_num 1 out_num 1
1@10.300000:virtqueue_fill vq 0x1000 elem 0xa0 len 7 idx 0
1@10.300001:virtqueue_flush vq 0x1000 count 1
1@10.400000:virtqueue_pop vq 0x2000 elem 0xb0 in_num 0 out_num 2
1@11.000000:vm_state_notify running 0 reason 4 (pause)
"""


def _state(*devs):
    from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState, VirtQueueState
    return QemuVirtioState(devices=tuple(
        VirtIODeviceState(canonical_path=p, guest_features=features,
                          queues={0: VirtQueueState(0, vring_num=8, last_avail_idx=last,
                                                    used_idx=used, inuse=inuse)})
        for p, features, last, used, inuse in devs), source="log")


def test_counts_tie_a_device_only_when_one_fits(tmp_path):
    path = tmp_path / "t.log"
    path.write_text(HAND)
    tl = build_timeline(read_trace(path))
    # 0x10: 2 pops, 1 flushed since its reset; 0x20: 1 pop, 0 flushed
    join = join_trace(tl, _state(("/a", 0, 2, 1, 1), ("/b", 0, 1, 0, 1)), {})
    assert join.matched_by == "counts"
    assert {(q.path, q.timeline.vdev) for q in join.queues} == {("/a", 0x10), ("/b", 0x20)}
    (t,) = join.queue("/a", 0).in_flight
    # no ring read: the avail index is placed by the pops, the head is not known
    assert (t.element.elem, t.avail_idx, t.head, t.tied_by) == (0xA1, 1, None, None)
    # two devices fit 0x20's counts: it is tied to neither
    join = join_trace(tl, _state(("/a", 0, 2, 1, 1), ("/b", 0, 1, 0, 1), ("/c", 0, 1, 0, 1)), {})
    assert {q.path for q in join.queues} == {"/a"}
    assert any("could not be tied" in n for n in join.notes)


def test_a_packed_ring_is_not_tied_and_says_so(tmp_path):
    path = tmp_path / "t.log"
    path.write_text(HAND)
    tl = build_timeline(read_trace(path))
    join = join_trace(tl, _state(("/a", 1 << 34, 2, 1, 1), ("/b", 0, 1, 0, 1)), {})
    (t,) = join.queue("/a", 0).in_flight
    assert t.avail_idx is None and join.queue("/b", 0).in_flight[0].avail_idx == 0
    assert any("/a: a packed ring" in n for n in join.notes)


def test_the_trace_members_are_there_only_with_a_trace():
    """With ``--trace`` every chain of a queue detail has ``taken``, every used entry
    ``returned`` and the detail ``trace`` (``null`` where the trace ties nothing); without it not
    one of these keys (the records' JSON is main's)."""
    args = [bundle("tracepanic"), "--json", "--queue", "0", "--device", BLK0]
    plain = json.loads(CliRunner().invoke(cli, args).output)
    joined = json.loads(CliRunner().invoke(cli, [*args, "--trace", trace("tracepanic")]).output)
    (p,), (j,) = plain["queue_detail"], joined["queue_detail"]
    assert "trace" not in p and all("taken" not in c for c in p["chains"])
    assert all("returned" not in u for u in p["used_entries"])
    assert j["trace"]["agrees"] is True and all("taken" in c for c in j["chains"])
    assert all("returned" in u for u in j["used_entries"])
    assert list(j) == [*p, "trace"]
    assert [{k: v for k, v in u.items() if k != "returned"} for u in j["used_entries"]] == \
        p["used_entries"]

"""QEMU's trace (log backend) as a per-queue timeline, on two real traced runs.

``tests/data/traces/`` holds two recordings of Debian's QEMU 7.2 (TCG) made with the recorder's
``"trace"`` key (``-trace enable=virtqueue_* … -D FILE -msg timestamp=on``), whole:

- ``tracepanic``: a guest panic (``-action panic=pause``) with a throttled virtio-blk
  (``iops-total=20``) under a writer, virtio-scsi, user-net and rng loops;
- ``tracereset``: a guest panic with virtio-blk throttled to ``iops-total=5`` under three direct
  writers, and virtio_rng unbound and rebound mid-run (a device reset).

Each ``*.truth.json`` keeps what the run's QEMU said at ``stop`` (``inuse`` of every queue, from
``x-query-virtio-queue-status``) and where its core put each device (``VirtIODevice`` and its
``VirtQueue`` array, read from the run's ``qemu.core`` by ``vdecode.space.open.open_dump``; the
cores are 40 MB and stay out of the repository).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from vdecode.cli import cli
from vdecode.errors import InputError
from vdecode.reconstruct.timeline.queues import build_timeline
from vdecode.sources.trace import read_trace

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"
CASES = ("tracepanic", "tracereset")


def truth(case: str) -> dict:
    return json.loads((DATA / f"{case}.truth.json").read_text())


def core_devices(case: str) -> tuple[dict[int, tuple[str, int]], int]:
    arrays = truth(case)["queue_arrays"]
    return {int(v, 16): (p, int(a, 16)) for p, v, a, _ in arrays}, arrays[0][3]


@pytest.fixture(scope="module", params=CASES)
def case(request):
    trace = read_trace(DATA / f"{request.param}.log.zst")
    devices, size = core_devices(request.param)
    return request.param, trace, build_timeline(trace, devices=devices, vq_size=size)


def by_queue(tl) -> dict[str, object]:
    return {f"{q.path} {q.queue}": q for q in tl.queues}


def test_in_flight_at_the_end_is_qemus_inuse_at_stop_on_every_queue(case):
    name, _, tl = case
    queues = by_queue(tl)
    inuse = truth(name)["inuse_at_stop"]
    assert set(inuse) <= set(queues), set(inuse) - set(queues)
    for key, want in inuse.items():
        q = queues[key]
        assert (len(q.in_flight), q.inuse) == (want, want), key
    assert tl.named_by == "core" and all(q.path for q in tl.queues)


def test_the_pause_is_seen_with_what_the_throttled_disk_held(case):
    name, _, tl = case
    assert tl.pause_reason == "guest-panicked" and tl.pauses == 1 and tl.pause.t is not None
    blk = by_queue(tl)["/machine/peripheral/blk0/virtio-backend 0"]
    held = blk.in_flight_at_pause
    # the run's own numbers: 1 request inside QEMU's throttle at the panic (iops 20), 3 with
    # three writers at iops 5; QEMU's pause completed them all (inuse 0 at stop)
    assert len(held) == {"tracepanic": 1, "tracereset": 3}[name]
    assert blk.completed_after_pause == len(held) and blk.in_flight == ()
    for e in held:
        assert e.popped.t < tl.pause.t and e.popped.line < tl.pause.line
        assert e.request.startswith("virtio_blk_handle_write vdev ")
    others = [q for q in tl.queues if q is not blk and q.in_flight_at_pause]
    assert others == []


def test_the_trace_alone_places_every_queue_as_the_core_does(case):
    name, trace, tl = case
    alone = build_timeline(trace)
    assert alone.named_by == "trace"
    assert {q.vq: (q.vdev, q.queue) for q in alone.queues} == \
           {q.vq: (q.vdev, q.queue) for q in tl.queues}
    assert {q.vq: len(q.in_flight_at_pause) for q in alone.queues} == \
           {q.vq: len(q.in_flight_at_pause) for q in tl.queues}


def test_counts_agree_with_the_trace_text(case):
    name, trace, tl = case
    text = zstandard.ZstdDecompressor().stream_reader(open(DATA / f"{name}.log.zst", "rb")).read()
    assert trace.lines == text.count(b"\n")
    assert sum(q.popped for q in tl.queues) == text.count(b":virtqueue_pop ")
    assert sum(q.returned for q in tl.queues) == text.count(b":virtqueue_fill ")
    assert trace.timestamps and trace.other_lines == 0 and not tl.notes
    # device events without a request are counted as not used
    assert dict(trace.ignored) == {"virtio_blk_data_plane_start": 2, "virtio_blk_data_plane_stop": 2}


def test_the_unbound_rng_was_reset_mid_run():
    tl = build_timeline(read_trace(DATA / "tracereset.log.zst"))
    base = build_timeline(read_trace(DATA / "tracepanic.log.zst"))
    rng = next(q for q in tl.queues if q.vdev == 0x55832c24a7a0)
    rng0 = next(q for q in base.queues if q.vdev == 0x555663241340)
    for name, q in (("tracepanic", rng0), ("tracereset", rng)):
        text = zstandard.ZstdDecompressor().stream_reader(open(DATA / f"{name}.log.zst", "rb")).read()
        assert q.resets == text.count(f"virtio_set_status vdev {q.vdev:#x} val 0\n".encode())
    # the same boot; the unbind adds two (the driver's remove resets, the probe on bind again)
    assert rng.resets - rng0.resets == 2


def _strip(text: bytes) -> bytes:
    return re.sub(rb"(?m)^\d+@\d+\.\d+:", b"", text)


def test_a_trace_without_timestamps_gives_the_same_story_by_line(tmp_path):
    raw = zstandard.ZstdDecompressor().stream_reader(open(DATA / "tracepanic.log.zst", "rb")).read()
    plain = tmp_path / "trace.log.gz"
    plain.write_bytes(gzip.compress(_strip(raw)))
    devices, size = core_devices("tracepanic")
    tl = build_timeline(read_trace(plain), devices=devices, vq_size=size)
    ref = build_timeline(read_trace(DATA / "tracepanic.log.zst"), devices=devices, vq_size=size)
    assert not tl.timestamps and tl.pause.t is None and tl.pause.line == ref.pause.line
    assert [(q.path, q.queue, q.popped, q.returned, len(q.in_flight), len(q.in_flight_at_pause))
            for q in tl.queues] == \
           [(q.path, q.queue, q.popped, q.returned, len(q.in_flight), len(q.in_flight_at_pause))
            for q in ref.queues]
    held = [e for q in tl.queues for e in q.in_flight_at_pause]
    assert held and all(e.popped.t is None and e.popped.line for e in held)
    assert any("no timestamps" in n for n in tl.notes)
    out = CliRunner().invoke(cli, ["trace", str(plain), "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert rec["timestamps"] is False and rec["pause"]["t"] is None


def test_a_reset_drops_what_the_device_held(tmp_path):
    """A reset (virtio_set_status val 0) of blk0 just before the panic: its request is dropped,
    not in flight at the pause, and the fill the pause then did is of an element it never saw."""
    raw = zstandard.ZstdDecompressor().stream_reader(open(DATA / "tracepanic.log.zst", "rb")).read()
    lines = raw.split(b"\n")
    at = next(i for i, ln in enumerate(lines) if b":runstate_set " in ln and b"guest-panicked" in ln)
    stamp = lines[at].split(b":", 1)[0]
    lines.insert(at, stamp + b":virtio_set_status vdev 0x555662f5c620 val 0")
    path = tmp_path / "reset.log"
    path.write_bytes(b"\n".join(lines))
    tl = build_timeline(read_trace(path))
    blk0 = next(q for q in tl.queues if q.vdev == 0x555662f5c620 and q.queue == 0)
    ref = next(q for q in build_timeline(read_trace(DATA / "tracepanic.log.zst")).queues
               if q.vdev == 0x555662f5c620 and q.queue == 0)
    assert (ref.dropped_by_reset, len(ref.in_flight_at_pause)) == (0, 1)
    assert (blk0.resets - ref.resets, blk0.dropped_by_reset, len(blk0.in_flight_at_pause)) == (1, 1, 0)
    assert blk0.returned_unseen == 1 and blk0.in_flight == ()
    assert any("never saw popped" in n for n in tl.notes)


SAMPLE = """\
26160@1796671523.099319:virtio_set_status vdev 0x55b0ab478a90 val 0
26160@1796671528.227264:virtio_queue_notify vdev 0x55b0ab562d40 n 2 vq 0x7fbd9001b140
26160@1796671528.227300:virtio_queue_notify vdev 0x55b0ab562d40 n 3 vq 0x7fbd9001b1d8
26160@1796671530.936985:virtqueue_alloc_element elem 0x55b0aa6ce2a0 size 264 in_num 2 out_num 1
26160@1796671530.936986:virtqueue_pop vq 0x7fbd9001b1d8 elem 0x55b0aa6ce2a0 in_num 2 out_num 1
26160@1796671530.936990:virtqueue_alloc_element elem 0x55b0aa54fac0 size 264 in_num 2 out_num 1
26160@1796671530.936991:virtqueue_pop vq 0x7fbd9001b140 elem 0x55b0aa54fac0 in_num 2 out_num 1
26160@1796671531.000000:some_other_event x 1
qemu-system-x86_64: a message of QEMU's own
26160@1796671532.093900:runstate_set current_run_state 9 (running) new_state 14 (guest-panicked)
26160@1796671532.093942:vm_state_notify running 0 reason 14 (guest-panicked)
26160@1796671532.094261:virtqueue_fill vq 0x7fbd9001b140 elem 0x55b0aa54fac0 len 4097 idx 0
26160@1796671532.094262:virtqueue_flush vq 0x7fbd9001b140 count 1
26160@1796671532.094263:virtio_notify_irqfd vdev 0x55b0ab562d40 vq 0x7fbd9001b140
"""


def test_the_issues_lines_by_hand(tmp_path):
    path = tmp_path / "t.log"
    path.write_text(SAMPLE)
    trace = read_trace(path)
    assert trace.other_lines == 1 and dict(trace.ignored) == {"some_other_event": 1}
    tl = build_timeline(trace)
    q2, q3 = [q for q in tl.queues if q.vdev == 0x55b0ab562d40]
    assert (q2.queue, q3.queue) == (2, 3)
    assert [len(q.in_flight_at_pause) for q in (q2, q3)] == [1, 1]
    assert [len(q.in_flight) for q in (q2, q3)] == [0, 1]
    assert q2.completed_after_pause == 1 and q2.last_interrupt.t == 1796671532.094263
    assert q3.in_flight[0].popped.t == 1796671530.936986 and q3.in_flight[0].in_num == 2
    # an address allocated again while in flight: the element left without a fill
    path.write_text(SAMPLE + "26160@1796671533.0:virtqueue_alloc_element elem 0x55b0aa6ce2a0 "
                             "size 264 in_num 1 out_num 1\n")
    q3 = next(q for q in build_timeline(read_trace(path)).queues if q.queue == 3)
    assert q3.in_flight == () and q3.left_unreturned == 1
    # without vm_state_notify, runstate_set leaving "running" is the pause
    path.write_text("".join(ln for ln in SAMPLE.splitlines(True) if "vm_state_notify" not in ln))
    tl = build_timeline(read_trace(path))
    assert tl.pause.t == 1796671532.0939 and tl.pause_reason == "guest-panicked"
    assert sum(len(q.in_flight_at_pause) for q in tl.queues) == 2


def test_iso_times_and_missing_events(tmp_path):
    path = tmp_path / "t.log"
    path.write_text("2026-12-07T21:53:28.500000Z virtio_queue_notify vdev 0x10 n 0 vq 0x2000\n"
                    "2026-12-07T21:53:28.600000Z virtio_notify vdev 0x10 vq 0x2000\n")
    tl = build_timeline(read_trace(path))
    (q,) = tl.queues
    assert q.popped is None and q.in_flight is None and q.in_flight_at_pause is None
    assert q.last_kick.t == pytest.approx(1796680408.5)
    assert any("virtqueue_pop or virtqueue_fill" in n for n in tl.notes)
    assert any("no pause" in n for n in tl.notes)


def test_not_a_trace_is_one_line(tmp_path):
    path = tmp_path / "x.log"
    path.write_text("hello world!\n{json}\n")
    with pytest.raises(InputError, match="no virtio or run-state QEMU trace event"):
        read_trace(path)
    r = subprocess.run([sys.executable, "-m", "vdecode", "trace", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"vdecode: error: {path}: ")
    cut = tmp_path / "cut.log.zst"
    cut.write_bytes((DATA / "tracepanic.log.zst").read_bytes()[:20000])
    tl = build_timeline(read_trace(cut))         # a cut compressed trace keeps what it has
    assert 0 < tl.lines < 49811


def test_cli_text_fits_80_columns_and_json_has_the_fields():
    path = str(DATA / "tracepanic.log.zst")
    out = CliRunner().invoke(cli, ["trace", path], env={"COLUMNS": ""})
    assert out.exit_code == 0, out.output
    assert max(map(len, out.output.splitlines())) <= 80
    assert "in flight when the VM paused: 1; 1 returned after it" in out.output
    out = CliRunner().invoke(cli, ["trace", path, "--json"])
    rec = json.loads(out.output)
    for q in rec["queues"]:
        assert {"path", "queue", "vq", "in_flight", "in_flight_at_pause", "elements"} <= set(q)
    blk = next(q for q in rec["queues"] if q["vdev"] == "0x555662f5c620" and q["queue"] == 0)
    assert blk["in_flight_at_pause"] == 1 and blk["elements_at_pause"][0]["popped_at"] > 0


def test_a_qemu_core_gives_each_devices_queue_array(captures):
    from vdecode.space.open import open_dump

    cap = captures.get("basic") or next(iter(captures.values()))
    core_path = cap.dump("qemu-core")
    with open_dump(core_path) as core:
        arrays = core.queue_arrays
        assert [p for p, *_ in arrays] == [d.canonical_path for d in core.qemu.devices]
        assert all(size == 152 and arr != vdev for _, vdev, arr, size in arrays)
    # a core of another run names nothing here, and says so
    out = CliRunner().invoke(cli, ["trace", str(DATA / "tracepanic.log.zst"), "--core",
                                   str(core_path), "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert rec["named_by"] == "trace" and all(q["path"] is None for q in rec["queues"])
    assert any("not of this trace's run" in n for n in rec["notes"])


def test_core_addresses_name_every_queue_and_a_missing_device_is_said():
    trace = read_trace(DATA / "tracepanic.log.zst")
    devices, size = core_devices("tracepanic")
    rng = next(v for v, (p, _) in devices.items() if "rng0" in p)
    del devices[rng]
    tl = build_timeline(trace, devices=devices, vq_size=size)
    assert [q.path for q in tl.queues if q.path is None] == [None]
    assert any("1 device(s) of the trace are not in the core" in n for n in tl.notes)


@pytest.mark.parametrize("kind", ["zst", "gz"])
def test_a_cut_compressed_trace_says_it_is_cut_first(tmp_path, kind):
    """A compressed trace cut short keeps the lines before the cut, and the timeline's first note
    says where the file ends (zstandard's stream reader used to end a cut frame silently: the
    answer looked whole)."""
    text = zstandard.ZstdDecompressor().decompressobj().decompress(
        (DATA / "tracepanic.log.zst").read_bytes())
    whole = (zstandard.ZstdCompressor(level=3).compress(text) if kind == "zst"
             else gzip.compress(text, compresslevel=6))
    cut = tmp_path / f"cut.log.{kind}"
    cut.write_bytes(whole[:len(whole) // 3])
    trace = read_trace(cut)
    assert trace.cut and "ends after line" in trace.cut, trace.cut
    tl = build_timeline(trace)
    assert 0 < tl.lines < text.count(b"\n")
    assert tl.notes[0].startswith("INCOMPLETE TRACE: the compressed trace ends after line ")
    full = tmp_path / f"whole.log.{kind}"
    full.write_bytes(whole)
    assert read_trace(full).cut is None
    assert not any("INCOMPLETE" in n for n in build_timeline(read_trace(full)).notes)


def test_a_cut_zstd_qmp_log_is_warned_about(tmp_path):
    """The same reader under QMP logs: a zstd log cut short keeps its lines before the cut and
    the log's warnings say where it ends (it used to end silently, looking whole)."""
    from vdecode.sources.qmp_log.read import read_qmp_log

    line = json.dumps({"t": 1.0, "dir": "<-", "msg": {"return": {}}}) + "\n"
    greeting = json.dumps({"t": 0.5, "dir": "<-", "msg": {"QMP": {"version": {"qemu": {
        "micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}}) + "\n"
    text = (greeting + line * 200000).encode()
    whole = zstandard.ZstdCompressor(level=1).compress(text)
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(whole[:len(whole) // 2])
    log = read_qmp_log(cut)
    assert any("compressed log ends here" in w for w in log.warnings), log.warnings
    (tmp_path / "whole.jsonl.zst").write_bytes(whole)
    assert not read_qmp_log(tmp_path / "whole.jsonl.zst").warnings

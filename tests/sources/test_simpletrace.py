"""QEMU's ``simple`` trace backend files: the same timeline as the ``log`` backend's text.

Debian's QEMU has only the ``log`` backend; the real traces of ``tests/data/traces`` are turned
into simpletrace files at test time (``tests/builders/simpletrace.py``, QEMU's format), then read
back and compared with the text's timeline, queue by queue and element by element.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from tests.builders.simpletrace import log_to_simpletrace
from vdecode.cli import cli
from vdecode.errors import CorruptInput, InputError
from vdecode.reconstruct.timeline.queues import build_timeline
from vdecode.sources.simpletrace import event_declarations, format_args
from vdecode.sources.trace import read_trace

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"


def raw(case: str) -> bytes:
    with open(DATA / f"{case}.log.zst", "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def shape(tl) -> list:
    """Everything of a timeline but the clock: counts, places, elements, resets, pause."""
    def els(xs):
        return None if xs is None else [(e.elem, e.popped.line, e.in_num, e.out_num, e.request,
                                         e.ordinal, e.used_ordinal, e.len) for e in xs]
    return [tl.pause.line if tl.pause else None, tl.pause_reason, tl.pauses, tl.events,
            dict(tl.ignored)] + [
        (q.vq, q.vdev, q.queue, q.popped, q.returned, q.flushed, q.inuse, q.resets,
         q.dropped_by_reset, q.left_unreturned, q.returned_unseen, els(q.in_flight),
         els(q.in_flight_at_pause), q.completed_after_pause, q.popped_since_reset,
         q.flushed_since_reset, q.last_kick.line if q.last_kick else None)
        for q in tl.queues]


@pytest.mark.parametrize("case", ["tracepanic", "tracereset", "traceinflight"])
def test_a_simpletrace_file_gives_the_logs_timeline(case, tmp_path):
    text = raw(case)
    path = tmp_path / "trace.simple"
    path.write_bytes(log_to_simpletrace(text))
    st = read_trace(path)
    log = read_trace(DATA / f"{case}.log.zst")
    assert (st.backend, st.clock, log.backend, log.clock) == ("simpletrace", "monotonic", "log", "unix")
    assert st.lines == log.lines and dict(st.counts) == dict(log.counts)
    a, b = build_timeline(st), build_timeline(log)
    assert shape(a) == shape(b)
    # the same instants: the builder wrote each line's time in nanoseconds
    assert a.pause.t == pytest.approx(b.pause.t, abs=1e-6)
    for qa, qb in zip(a.queues, b.queues):
        for ea, eb in zip(qa.in_flight_at_pause or (), qb.in_flight_at_pause or ()):
            assert ea.popped.t == pytest.approx(eb.popped.t, abs=1e-6)
    assert any("monotonic clock" in n for n in a.notes)


def test_compressed_and_through_the_cli(tmp_path):
    path = tmp_path / "trace.simple.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(log_to_simpletrace(raw("tracepanic"))))
    out = CliRunner().invoke(cli, ["trace", str(path), "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert rec["backend"] == "simpletrace" and rec["clock"] == "monotonic"
    blk = next(q for q in rec["queues"] if q["vdev"] == "0x555662f5c620" and q["queue"] == 0)
    assert blk["in_flight_at_pause"] == 1
    text = CliRunner().invoke(cli, ["trace", str(path)], env={"COLUMNS": ""}).output
    assert "monotonic clock" in text and "UTC" not in text.split("\n\n")[0]
    assert "(49811 records, 49807 events used" in text
    assert max(len(ln) for ln in text.splitlines() if str(path) not in ln) <= 80


def test_the_printf_of_qemus_formats():
    d = event_declarations()
    decl, fmt = d["virtio_blk_handle_write"]
    assert format_args(fmt, decl, [0x55, 0, 7, 8]) == "vdev 0x55 req (nil) sector 7 nsectors 8"
    decl, fmt = d["vm_state_notify"]
    assert format_args(fmt, decl, [0, 2 ** 64 - 1, b"guest-panicked"]) == \
        "running 0 reason -1 (guest-panicked)"
    decl, fmt = d["virtio_set_status"]
    assert format_args(fmt, decl, [0x10, 0x10F]) == "vdev 0x10 val 15"     # a uint8_t


def _st(tmp_path, data: bytes) -> Path:
    path = tmp_path / "t.simple"
    path.write_bytes(data)
    return path


def test_damage_is_one_error_with_its_offset(tmp_path):
    good = log_to_simpletrace(raw("tracepanic"))
    # cut inside the last record: the error names where that record starts
    cut = len(good) - 10
    with pytest.raises(CorruptInput) as err:
        read_trace(_st(tmp_path, good[:cut]))
    text = raw("tracepanic")
    # the file without the last line ends where the last record starts (its event was seen before:
    # the same mapping records)
    last = len(log_to_simpletrace(text[:text.rstrip(b"\n").rfind(b"\n") + 1]))
    assert err.value.offset == last
    assert "cut short" in str(err.value) and f"at offset {err.value.offset:#x}" in str(err.value)
    # a record type that is neither a mapping nor an event
    first_event = good.index(struct.pack("<QQ", 1, 100))
    bad = bytearray(good)
    bad[first_event] = 7
    with pytest.raises(CorruptInput, match="unknown type 7") as err:
        read_trace(_st(tmp_path, bytes(bad)))
    assert err.value.offset == first_event
    # an event id no mapping named
    bad = bytearray(good)
    bad[first_event + 8:first_event + 16] = struct.pack("<Q", 99)
    with pytest.raises(CorruptInput, match="event id 99"):
        read_trace(_st(tmp_path, bytes(bad)))
    # an impossible record length
    bad = bytearray(good)
    bad[first_event + 24:first_event + 28] = struct.pack("<I", 3)
    with pytest.raises(CorruptInput, match="length 3") as err:
        read_trace(_st(tmp_path, bytes(bad)))
    assert err.value.offset == first_event
    # another version of the format
    with pytest.raises(CorruptInput, match="version 3") as err:
        read_trace(_st(tmp_path, log_to_simpletrace(raw("tracepanic"), version=3)))
    assert err.value.offset == 16
    # the header only: no event
    with pytest.raises(InputError, match="no virtio or run-state QEMU trace event in 0 record"):
        read_trace(_st(tmp_path, good[:24]))


def test_the_cli_says_it_in_one_line(tmp_path):
    good = log_to_simpletrace(raw("tracepanic"))
    path = _st(tmp_path, good[:len(good) - 10])
    r = subprocess.run([sys.executable, "-m", "vdecode", "trace", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"vdecode: error: {path} at offset 0x")
    assert "simpletrace event record cut short" in r.stderr

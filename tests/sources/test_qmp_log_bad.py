"""Bad QMP logs: truncated lines, invalid JSON, binary garbage, replies without requests, unknown
formats. Something skipped is a warning with file and line; an unusable file is one InputError."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdecode.errors import InputError, QmpLogError, VdecodeError
from vdecode.sources.qmp_log import read_qmp_log
from vdecode.sources.qmp_log.sniff import FORMATS

DATA = Path(__file__).resolve().parent.parent / "data" / "logs"
SAMPLES = sorted(p for p in DATA.glob("*/*") if p.suffix != ".md")


def test_truncated_transcript_line_is_a_warning(tmp_path, captures):
    lines = captures["basic"].log("early").read_text().splitlines(keepends=True)
    p = tmp_path / "cut.jsonl"
    p.write_text("".join(lines[:6]) + lines[6][:40])          # the log ends mid-record
    log = read_qmp_log(p)
    assert log.warnings == [f"{p} line 7: not JSON: Unterminated string starting at: "
                            "line 1 column 39 (char 38)"]
    assert [x.request["id"] for x in log.exchanges] == [1, 2]   # the cut command is skipped


def test_binary_garbage_inside_a_libvirt_log(tmp_path):
    real = (DATA / "real" / "libvirtd.log").read_bytes()
    p = tmp_path / "garbage.log"
    p.write_bytes(real[:2000] + b"\x00\xff\xfe garbage \x89PNG\r\n\x1a\n" + os.urandom(512).replace(b"\n", b"")
                  + b"\n" + real[2000:])
    log = read_qmp_log(p)
    assert log.format == "libvirt"
    assert [len(m.exchanges) for m in log.monitors] == [20, 7, 7]


def test_invalid_json_reply_in_libvirt_log(tmp_path):
    p = tmp_path / "bad.log"
    p.write_text(
        '2026-11-25 03:04:48.157+0000: 8312: info : qemuMonitorSend:861 : QEMU_MONITOR_SEND_MSG: '
        'mon=0x1 msg={"execute":"x-query-virtio","id":"libvirt-9"}\r\n fd=-1\n'
        '2026-11-25 03:04:48.158+0000: 8337: info : qemuMonitorJSONIOProcessLine:208 : '
        'QEMU_MONITOR_RECV_REPLY: mon=0x1 reply={"return": [{"name": "virtio-net", "pa\n')
    log = read_qmp_log(p)
    assert log.warnings == [f"{p} line 3: QMP message is not JSON: Unterminated string starting "
                            "at: line 1 column 36 (char 35)"]
    [x] = log.exchanges
    assert x.command == "x-query-virtio" and x.reply is None


def test_reply_without_request_and_non_qmp_objects(tmp_path):
    p = tmp_path / "odd.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"t": 1, "dir": "<-", "msg": {"return": {}, "id": 7}},
        {"t": 2, "dir": "<-", "msg": {"hello": "world"}},
        {"t": 3, "dir": "<-", "msg": [1, 2]},
        [1, 2, 3],
    ]) + "\n")
    log = read_qmp_log(p)
    assert log.warnings == [
        f"{p} line 1: reply with id 7 answers no logged command",
        f"{p} line 2: not a QMP message: members hello; expected execute, return, error, event or QMP",
        f"{p} line 3: not a QMP message: a JSON list, not an object",
        f'{p} line 4: not a transcript record: expected {{"t", "dir", "msg"}}']
    [x] = log.exchanges
    assert x.request is None and x.reply == {"return": {}, "id": 7}


def test_unknown_format_names_the_formats(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("\n\nthe VM crashed at noon\nno QMP here\n")
    with pytest.raises(InputError) as err:
        read_qmp_log(p)
    assert str(err.value) == (f"{p} line 3: not a QMP log in any known format "
                              f"({', '.join(FORMATS)}); name one with --log-format")


def test_binary_file_is_an_input_error(tmp_path):
    p = tmp_path / "core"
    p.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match=rf"^{p} line 1: not a QMP log in any known format"):
        read_qmp_log(p)


def test_empty_and_directory_and_unknown_format_name(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=rf"^{empty}: empty log: no QMP traffic$"):
        read_qmp_log(empty)
    assert read_qmp_log(empty, "libvirt").monitors == []
    with pytest.raises(InputError, match=rf"^{tmp_path}: cannot open: Is a directory$"):
        read_qmp_log(tmp_path)
    with pytest.raises(InputError) as err:
        read_qmp_log(empty, "syslog")
    assert str(err.value) == f"{empty}: unknown log format 'syslog'; known: {', '.join(FORMATS)}"


def test_vm_not_in_log_lists_what_is_there():
    p = DATA / "real" / "libvirtd.log"
    with pytest.raises(QmpLogError) as err:
        read_qmp_log(p, vm="nope")
    assert str(err.value) == (
        f"{p}: no VM or monitor 'nope' in this log; found: "
        "vd-guest1 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0001 (monitor 0x7fc054007740, 20 exchanges, 6 events); "
        "vd-guest2 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0002 (monitor 0x7fc054007d00, 7 exchanges, 2 events); "
        "vd-guest1 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0001 (monitor 0x7fc070006180, 7 exchanges, 2 events)")


def test_unbalanced_pretty_object_does_not_swallow_the_log(tmp_path):
    p = tmp_path / "open.txt"
    p.write_text('{"QMP": {"version": {}, "capabilities": []}}\n{\n    "return": {\n' +
                 "    1\n" * 10)
    log = read_qmp_log(p)
    assert log.warnings == [f"{p} line 2: object cut off at the end of the log, skipped"]


def test_warnings_are_bounded(tmp_path):
    p = tmp_path / "many.jsonl"
    good = json.dumps({"t": 1, "dir": "<-", "msg": {"QMP": {}}})
    p.write_text(good + "\n" + "{bad\n" * 3000)
    log = read_qmp_log(p, "jsonl")
    assert len(log.warnings) == 1001
    assert log.warnings[-1] == f"{p}: 2000 more warnings not shown"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sample=st.sampled_from(SAMPLES), data=st.data())
def test_mutated_real_logs_read_or_raise_vdecode_error(tmp_path, sample, data):
    raw = bytearray(sample.read_bytes()[:6000])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        op = data.draw(st.sampled_from(["flip", "cut", "dup", "nl"]))
        if op == "flip" and raw:
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[i:i + data.draw(st.integers(1, 200))]
        elif op == "dup":
            raw[i:i] = raw[i:i + data.draw(st.integers(1, 200))]
        else:
            raw[i:i] = b"\n"
    p = tmp_path / "mutated.log"
    p.write_bytes(bytes(raw))
    fmt = data.draw(st.sampled_from([None, *FORMATS]))
    try:
        log = read_qmp_log(p, fmt)
    except VdecodeError:
        return
    assert all(w.startswith(str(p)) for w in log.warnings)


def test_compressed_logs_and_a_cut_one(tmp_path):
    import gzip

    import zstandard

    real = (DATA / "real" / "libvirtd.log").read_bytes()
    gz, zst = tmp_path / "l.log.gz", tmp_path / "l.log.zst"
    gz.write_bytes(gzip.compress(real))
    zst.write_bytes(zstandard.ZstdCompressor().compress(real))
    plain = read_qmp_log(DATA / "real" / "libvirtd.log")
    for p in (gz, zst):
        log = read_qmp_log(p)
        assert log.warnings == [] and [x.reply for x in log.exchanges] == \
            [x.reply for x in plain.exchanges]
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(gzip.compress(real)[:3000])
    log = read_qmp_log(cut)
    assert log.format == "libvirt" and 0 < len(log.exchanges) < len(plain.exchanges)
    assert log.warnings[-1].startswith(f"{cut} line ")
    assert log.warnings[-1].endswith(": compressed log ends here: Compressed file ended before "
                                     "the end-of-stream marker was reached")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 40)
    with pytest.raises(InputError, match=rf"^{bad} line 1: cannot decompress: "):
        read_qmp_log(bad)


def test_hostile_json_shapes(tmp_path):
    p = tmp_path / "hostile.jsonl"
    deep = "[" * 200000 + "]" * 200000
    p.write_text("\n".join([
        '{"t": 1, "dir": "->", "msg": {"execute": {"a": 1}, "id": [1]}}',
        '{"t": 1, "dir": "->", "msg": {"execute": "x", "id": {"b": [2]}}}',
        '{"t": 2, "dir": "<-", "msg": {"return": 5, "id": {"b": [2]}}}',
        '{"t": 3, "dir": "<-", "msg": ' + deep + "}",
        '{"t": 4, "dir": "<-", "msg": {"event": 5, "data": [1], "timestamp": {"seconds": "x"}}}',
    ]) + "\n")
    log = read_qmp_log(p)
    assert log.warnings == [
        f"{p} line 1: not a QMP command: the command name is a JSON dict, not a string",
        f"{p} line 4: not JSON: JSON nested too deeply"]
    [x] = log.exchanges
    assert x.request["id"] == {"b": [2]} and x.reply["return"] == 5
    [e] = log.monitors[0].events
    assert (e.name, e.data, e.t) == ("5", {}, 4)


def test_malformed_libvirt_probe_and_trace_after_other_events(tmp_path):
    p = tmp_path / "probe.log"
    p.write_text('2026-11-25 03:04:48.158+0000: 8337: info : qemuMonitorJSONIOProcessLine:208 : '
                 'QEMU_MONITOR_RECV_REPLY: monitor=? reply={"return": {}}\n')
    assert read_qmp_log(p).warnings == [
        f"{p} line 1: libvirt monitor record not understood, skipped: "
        "QEMU_MONITOR_RECV_REPLY: monitor=? reply={\"return\": {}}"]
    t = tmp_path / "trace.log"
    real = (DATA / "real" / "qemu-trace.log").read_text()
    t.write_text("".join(f"1234@1795576053.{i:06d}:virtio_queue_notify vdev 0x1 n {i} vq 0x2\n"
                         for i in range(400)) + real)
    log = read_qmp_log(t)
    assert log.format == "trace" and log.warnings == []
    assert len(log.exchanges) == len(read_qmp_log(DATA / "real" / "qemu-trace.log").exchanges)


def test_a_line_longer_than_the_limit_is_skipped(tmp_path):
    from vdecode.sources.qmp_log.lines import MAX_LINE

    p = tmp_path / "long.jsonl"
    rec = json.dumps({"t": 1, "dir": "<-", "msg": {"return": {}}})
    with open(p, "w") as f:
        f.write(rec + "\n")
        f.write('{"t": 2, "dir": "<-", "msg": {"return": "' + "x" * (MAX_LINE + 10) + '"}}\n')
        f.write(rec + "\n")
    log = read_qmp_log(p)
    assert log.warnings == [f"{p} line 2: line longer than {MAX_LINE} bytes, skipped"]
    assert len(log.exchanges) == 2


def test_libvirt_reply_whose_id_has_a_control_character(tmp_path):
    """Found by the mutation test: the id split off for sharing must decode on its own too."""
    p = tmp_path / "ctl.log"
    p.write_text("libvirtd[1]: QEMU_MONITOR_RECV_REPLY: mon=0x1 reply="
                 '{"return": {}, "id": "libvirt-\x0152"}\n')
    assert read_qmp_log(p).warnings == [
        f"{p} line 1: QMP message is not JSON: its id: Invalid control character at: "
        "line 1 column 10 (char 9)"]

"""A bundle is untrusted input like any dump: bad notes and mutated files give one clear error.

Synthetic bundles come from ``tests/builders/bundle.py``; the mutation test starts from a real one
(``vdecode bundle`` of the basic capture's QEMU core and early log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders.bundle import META, write_bundle_file
from vdecode.errors import CorruptInput, MissingData, UnsupportedInput, VdecodeError
from vdecode.profiles import load_profile
from vdecode.reconstruct.qmp.commands import COMMANDS
from vdecode.reconstruct.state.session import build_machine
from vdecode.reconstruct.qmp.error_replies import QmpError
from vdecode.sources.bundle_notes import NOTE_OWNER, VDB_META, VDB_SUMMARY, decode_qemu_state
from vdecode.sources.qmp_log import LogKnowledge
from vdecode.space.open import open_dump

META_AT = 0xc4          # the first note's descriptor: 64 + 2 * 56 + 12 + len("VDECODE\0")


def error_of(path: Path) -> VdecodeError:
    with pytest.raises(VdecodeError) as err:
        with open_dump(path):
            pass
    return err.value


def test_a_minimal_bundle_opens(tmp_path):
    p = write_bundle_file(tmp_path / "b.vdb", extra=[(NOTE_OWNER, VDB_SUMMARY, b"hello\n")])
    with open_dump(p) as dump:
        assert dump.format == "bundle" and dump.qemu is None and dump.qmp_log is None
        assert dump.info["summary"] == "hello\n"
        assert bytes(dump.space.read(0x1000, 4)) == b"\x55" * 4
        assert dump.space.ranges() == [(0, 1 << 20)]
        assert dump.space.kept_ranges() == [(0x1000, 0x1000)]
        with pytest.raises(MissingData) as err:
            dump.space.read(0x1ffe, 4)
        assert str(err.value) == f"{p}: guest-physical 0x1ffe+4 is not kept in the bundle (nothing at 0x2000)"


@pytest.mark.parametrize("meta,cls,reason", [
    (b"{not json", CorruptInput, "bundle: VDB_META note is not JSON: Expecting property name "
                                 "enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"[" * 100000, CorruptInput, "bundle: VDB_META note nests too deeply"),
    (b"\xff\xfe", CorruptInput, "bundle: VDB_META note is not UTF-8: invalid start byte at byte 0"),
    ([1], CorruptInput, "bundle: VDB_META is not an object with format 'vdecode-bundle'"),
    (dict(META, bundle_version="1"), CorruptInput,
     "bundle: VDB_META bundle_version '1' is not a positive integer"),
    (dict(META, origin={"ram_ranges": [[1, -1]]}), CorruptInput,
     "bundle: VDB_META origin.ram_ranges is not a list of [start, size] pairs of unsigned 64-bit "
     "integers"),
])
def test_bad_meta_is_corrupt_input_at_the_note(tmp_path, meta, cls, reason):
    p = write_bundle_file(tmp_path / "b.vdb", meta=meta)
    err = error_of(p)
    assert type(err) is cls
    assert str(err) == f"{p} at offset {META_AT:#x}: {reason}"


def test_a_newer_bundle_version_is_unsupported(tmp_path):
    p = write_bundle_file(tmp_path / "b.vdb", meta=dict(META, bundle_version=2))
    err = error_of(p)
    assert type(err) is UnsupportedInput
    assert str(err) == f"{p}: bundle version 2 is newer than this vdecode reads (1); upgrade vdecode"


def test_a_repeated_note_is_corrupt(tmp_path):
    p = write_bundle_file(tmp_path / "b.vdb", extra=[(NOTE_OWNER, VDB_META, b"{}")])
    assert str(error_of(p)) == f"{p} at offset 0x23c: bundle: 2 VDB_META notes, expected one"


@pytest.mark.parametrize("queue,reason", [
    ({"queue_index": 0, "vring_num": "256"}, "devices[0].queues[0].vring_num is not a 64-bit integer"),
    ({"queue_index": 0, "vring_num": 1 << 40},
     "devices[0].queues[0].vring_num 1099511627776 is outside 0..32768"),
    ({"queue_index": 5000}, "devices[0].queues[0].queue_index is not a queue number below 1024"),
    ({"queue_index": 0, "provenance": []}, "devices[0].queues[0].provenance is not an object"),
    ({"queue_index": 0, "notification": 1}, "devices[0].queues[0].notification is not a bool"),
])
def test_bad_qemu_state_names_the_member(tmp_path, queue, reason):
    p = write_bundle_file(tmp_path / "b.vdb", state={"devices": [{"canonical_path": "/x",
                                                                   "queues": [queue]}]})
    err = error_of(p)
    assert type(err) is CorruptInput
    assert str(err).startswith(f"{p} at offset 0x")
    assert str(err).endswith(f": bundle: VDB_QEMU_STATE: {reason}")


def test_state_decoding_rejects_null_where_qemu_has_a_value():
    with pytest.raises(CorruptInput) as err:
        decode_qemu_state({"devices": [{"canonical_path": "/x", "vhost_dev": {"nvqs": None}}]},
                          "b.vdb")
    assert str(err.value) == "b.vdb: bundle: VDB_QEMU_STATE: devices[0].vhost_dev.nvqs may not be null"


def test_a_huge_note_size_is_caught_by_the_elf_reader(tmp_path):
    p = write_bundle_file(tmp_path / "b.vdb")
    data = bytearray(p.read_bytes())
    data[0xb4:0xb8] = (0xFFFFFFF0).to_bytes(4, "little")     # VDB_META's n_descsz (note at 0xb0)
    p.write_bytes(bytes(data))
    err = error_of(p)
    assert type(err) is CorruptInput
    assert str(err) == (f"{p} at offset 0xb0: note (PT_NOTE 0): n_namesz 8 and n_descsz 4294967280 "
                        f"run past the end of the segment at {0xb0 + len_note_segment(p):#x}")


def len_note_segment(p: Path) -> int:
    data = p.read_bytes()
    return int.from_bytes(data[64 + 32:64 + 40], "little")            # PT_NOTE p_filesz


def test_a_bad_embedded_log_line_is_a_warning(tmp_path):
    p = write_bundle_file(tmp_path / "b.vdb",
                          log='{"t": 1, "dir": "->", "msg": {"execute": "x", "id": 1}}\nnot json\n')
    with open_dump(p) as dump:
        assert [w.split(": ", 1)[1] for w in dump.qmp_log.warnings] == [
            "not JSON: Expecting value: line 1 column 1 (char 0)"]


def test_cli_reports_a_corrupt_bundle_in_one_line(tmp_path):
    p = write_bundle_file(tmp_path / "b.vdb", meta=b"{not json")
    r = subprocess.run([sys.executable, "-m", "vdecode", "qmp", str(p)], input=b"",
                       capture_output=True)
    assert r.returncode == 2
    assert r.stderr.decode() == (f"vdecode: error: {p} at offset {META_AT:#x}: bundle: VDB_META "
                                 f"note is not JSON: Expecting property name enclosed in double "
                                 f"quotes: line 1 column 2 (char 1)\n")


@pytest.mark.parametrize("cut", [0, 10, 63, 100, 0xc4 + 10])
def test_a_truncated_bundle_is_an_error_not_a_crash(tmp_path, cut):
    p = write_bundle_file(tmp_path / "b.vdb")
    p.write_bytes(p.read_bytes()[:cut])
    assert isinstance(error_of(p), VdecodeError)


# --- mutations of a real bundle ----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_bundle(captures, tmp_path_factory):
    capture = captures["basic"]
    out = tmp_path_factory.mktemp("bundle") / "basic.vdb"
    r = subprocess.run([sys.executable, "-m", "vdecode", "bundle", str(capture.dump("qemu-core")),
                        "--log", str(capture.log("early")), "-o", str(out)], capture_output=True)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    notes_end = int.from_bytes(data[64 + 8:64 + 16], "little") + int.from_bytes(data[64 + 32:64 + 40], "little")
    return data, notes_end


def use(dump) -> None:
    """What ``vdecode qmp`` does with an opened bundle, a few questions per queue."""
    knowledge = LogKnowledge.from_log(dump.qmp_log) if dump.qmp_log else None
    profile = load_profile("7.2")
    machine, _ = build_machine(dump, knowledge, profile)
    for dev in machine.state.devices[:8]:
        for qn in sorted(dev.queues)[:4]:
            for cmd, args in (("x-query-virtio-queue-status", {}), ("x-query-virtio-status", {}),
                              ("x-query-virtio-queue-element", {"index": 0})):
                args = dict(args, path=dev.canonical_path)
                if cmd != "x-query-virtio-status":
                    args["queue"] = qn
                try:
                    COMMANDS[cmd](machine, profile, args)
                except QmpError:
                    pass


@settings(max_examples=int(os.environ.get("VDECODE_HYPOTHESIS_EXAMPLES", 150)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_real_bundle_opens_or_raises(real_bundle, data):
    raw, notes_end = real_bundle
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, notes_end - 1))
        width = data.draw(st.sampled_from([1, 2, 4, 8]))
        value = data.draw(st.integers(0, 2**64 - 1))
        buf[pos:pos + width] = (value % (1 << 8 * width)).to_bytes(width, "little")
    if data.draw(st.booleans()):
        buf = buf[:data.draw(st.integers(0, len(buf)))]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "mut.vdb"
        p.write_bytes(bytes(buf))
        tracemalloc.start()
        try:
            with open_dump(p) as dump:
                use(dump)
                json.dumps(dump.info, default=str)
        except VdecodeError:
            pass
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 64 << 20

"""``vdecode bundle`` on the real captures: the bundle answers exactly like its origin.

For every (dump, log) mode a capture offers, a bundle is made from that pair and ``vdecode qmp
BUNDLE`` (no ``--log``: the bundle carries it) must print the same bytes as ``vdecode qmp DUMP
--log LOG`` for every request of the capture's ``truth.json``, the bundle must stay under 1 MB,
and binutils' ``readelf -a`` must read it without a complaint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import capture_names
from tests.reconstruct.fidelity import capture_mode_params, run_qmp
from vdecode.errors import MissingData
from vdecode.render.bundle_writer import state_to_json
from vdecode.sources.bundle_notes import decode_qemu_state
from vdecode.space.open import open_dump

MAX_BUNDLE = 1 << 20
SIZES: dict[str, int] = {}


def vdecode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vdecode", *args], capture_output=True, text=True,
                          timeout=600)


def make_bundle(capture, dump: str, log: str, out, *extra: str) -> list[str]:
    args = [str(capture.dump(dump))] + (["--log", str(capture.log(log))] if log != "none" else [])
    r = vdecode("bundle", *args, "-o", str(out), *extra)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{out}: ")
    return args


def requests(capture) -> list[dict]:
    return ([{"execute": "qmp_capabilities", "id": "caps"}]
            + [dict(req, id=i) for i, (req, _) in enumerate(capture.truth)])


@pytest.mark.parametrize("name,dump,log", capture_mode_params(with_unanswerable=False))
def test_bundle_replies_equal_the_origin_byte_for_byte(captures, tmp_path, name, dump, log):
    capture = captures[name]
    out = tmp_path / f"{name}-{dump}-{log}.vdb"
    args = make_bundle(capture, dump, log, out)
    size = out.stat().st_size
    SIZES[f"{name}/{dump}+{log}"] = size
    print(f"bundle {name}/{dump}+{log}: {size} bytes")
    assert size <= MAX_BUNDLE
    reqs = requests(capture)
    want, _ = run_qmp(args, reqs)
    got, err = run_qmp([str(out)], reqs)
    assert len(want) == len(reqs) + 2          # greeting, replies, and the empty tail
    assert got == want, err[-500:]


@pytest.fixture(scope="module")
def core_bundle(captures, tmp_path_factory):
    capture = captures[capture_names()[0]]
    out = tmp_path_factory.mktemp("bundle") / "core-early.vdb"
    make_bundle(capture, "qemu-core", "early", out)
    return capture, out


def test_readelf_reads_the_bundle_without_complaint(core_bundle):
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("binutils' readelf is not installed")
    _, out = core_bundle
    r = subprocess.run([readelf, "-a", "-W", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert "CORE (Core file)" in r.stdout
    assert "Unknown note type: (0x56440001)" in r.stdout       # VDB_META
    assert "Unknown note type: (0x56440003)" in r.stdout       # VDB_QEMU_STATE
    assert r.stdout.count("  LOAD ") > 10


def test_bundle_opens_as_a_dump_with_the_origin_state(core_bundle):
    capture, out = core_bundle
    with open_dump(capture.dump("qemu-core")) as core, open_dump(out) as bundle:
        assert bundle.format == "bundle"
        assert bundle.qemu == core.qemu
        assert bundle.qmp_log is not None and bundle.qmp_log.monitors
        assert bundle.space.ranges() == core.space.ranges()
        assert bundle.info["origin"]["format"] == "qemu-core"
        assert bundle.info["origin"]["file"] == "qemu.core"
        assert bundle.info["options"] == {"header_bytes": 64, "full_buffers": False,
                                          "redact": False}
        assert bundle.info["summary"].startswith("vdecode bundle of qemu.core (qemu-core) with "
                                                 "a QMP log")
        kept = bundle.space.kept_ranges()
        for start, size in kept:
            assert bytes(bundle.space.read(start, size)) == bytes(core.space.read(start, size))
        # a page of RAM that was not kept, and an address that never was RAM
        end = kept[-1][0] + kept[-1][1]
        ram_end = core.space.ranges()[-1][0] + core.space.ranges()[-1][1]
        hole = next(s + z for s, z in kept if s + z < ram_end and not bundle.space.is_present(s + z, 1))
        with pytest.raises(MissingData) as err:
            bundle.space.read(hole, 8)
        assert str(err.value) == f"{out}: guest-physical {hole:#x}+8 is not kept in the bundle"
        with pytest.raises(MissingData) as err:
            bundle.space.read(1 << 50, 4)
        assert str(err.value) == (f"{out}: guest-physical {1 << 50:#x}+4 is not in the bundle "
                                  f"(nor was it in the origin dump)")
        assert end <= ram_end


def test_qemu_state_json_round_trips(captures):
    for name in capture_names():
        with open_dump(captures[name].dump("qemu-core")) as core:
            assert decode_qemu_state(json.loads(json.dumps(state_to_json(core.qemu))),
                                     "x.vdb") == core.qemu


def test_view_of_the_bundle_equals_the_view_of_the_origin(captures, tmp_path):
    for name in capture_names():
        capture = captures[name]
        out = tmp_path / f"{name}.vdb"
        args = make_bundle(capture, "elf", "early", out)
        a, b = vdecode(*args, "--json"), vdecode(str(out), "--json")
        assert a.returncode == b.returncode == 0, b.stderr
        va, vb = json.loads(a.stdout), json.loads(b.stdout)
        assert vb["input"]["format"] == "bundle"
        va.pop("input"), vb.pop("input")
        assert va == vb


def test_redact_zeroes_payloads_and_keeps_the_answers(core_bundle, tmp_path):
    capture, plain = core_bundle
    out = tmp_path / "redacted.vdb"
    args = make_bundle(capture, "qemu-core", "early", out, "--redact")
    reqs = requests(capture)
    assert run_qmp([str(out)], reqs)[0] == run_qmp(args, reqs)[0]
    with open_dump(out) as red, open_dump(plain) as full:
        assert red.info["options"]["redact"] is True
        zeroed = 0
        for start, size in full.space.kept_ranges():
            if not red.space.is_present(start, size):
                continue          # ring areas are kept exactly, not by page, when redacting
            a, b = bytes(full.space.read(start, size)), bytes(red.space.read(start, size))
            diff = [i for i in range(size) if a[i] != b[i]]
            assert all(b[i] == 0 for i in diff)
            zeroed += len(diff)
        assert zeroed > 0
    assert out.stat().st_size < plain.stat().st_size


def test_full_buffers_keep_more_and_answer_the_same(core_bundle, tmp_path):
    capture, plain = core_bundle
    out = tmp_path / "full.vdb"
    make_bundle(capture, "qemu-core", "none", out, "--full-buffers")
    reqs = requests(capture)
    assert run_qmp([str(out)], reqs)[0] == run_qmp([str(capture.dump("qemu-core"))], reqs)[0]
    with open_dump(out) as full, open_dump(plain) as small:
        assert full.info["kept_bytes"] > small.info["kept_bytes"]


def test_info_shows_a_bundle(core_bundle):
    _, out = core_bundle
    r = vdecode("info", "--json", str(out))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "bundle" and info["qemu_state"] is True


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.parametrize("name,origin", [("basic-core.vdb", "qemu-core"),
                                         ("mixed-elf-early.vdb", "elf")])
def test_samples_are_small_bundles_of_the_captures(name, origin):
    path = SAMPLES / name
    assert path.stat().st_size <= MAX_BUNDLE
    with open_dump(path) as dump:
        assert dump.format == "bundle"
        assert dump.info["origin"]["format"] == origin
        assert dump.qmp_log is not None
        assert (dump.qemu is not None) == (origin == "qemu-core")


def test_readme_first_command_runs_on_the_sample():
    r = vdecode(str(SAMPLES / "basic-core.vdb"), "--queue", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("basic-core.vdb (bundle)\nQEMU state from QEMU core, QEMU 7.2.22\n")

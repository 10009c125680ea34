"""QEMU 10.0 as data: real QEMU 10.0.2 recordings, the profile each input picks, and the 10.0 rules.

``tests/data/captures-10.0/<name>/`` holds what ``tools/capture/make_fixtures.py`` made from a
recording of Debian's QEMU 10.0.2 (``get_qemu.sh bookworm-backports``, ``VD_QEMU=...
make_captures.sh``): QEMU's replies (``truth.json``) and one compressed bundle per (dump, log)
mode. Scores may never fall below ``ratchet.json`` there; ``instant`` and ``qemu-core+none``
bundles must answer every reply exactly. With ``VDECODE_CAPTURES_10`` set to the uncompressed
recordings, the QOM-tree walk and the profile choice are checked on the real process cores too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reconstruct.fidelity import fixture_cases, score_fixture
from vdecode.profiles import load_profile, nearest_version
from vdecode.reconstruct.qmp.error_replies import QmpError
from vdecode.reconstruct.state.session import profile_for
from vdecode.reconstruct.qmp.status import find_device
from vdecode.reconstruct.qmp.virtio_list import x_query_virtio
from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState
from vdecode.virtio.device import VirtioMachine

DATA = Path(__file__).resolve().parent.parent / "data" / "captures-10.0"
RATCHET = DATA / "ratchet.json"
RECORDINGS = os.environ.get("VDECODE_CAPTURES_10")
EXACT_MODES = ("elf+instant", "qemu-core+none")


def _cases() -> list[tuple[str, str]]:
    return fixture_cases(DATA)


pytestmark = pytest.mark.usefixtures("bundle_cache")


def test_fixtures_are_small_and_of_qemu_10():
    sizes = [p.stat().st_size for p in DATA.rglob("*") if p.is_file()]
    assert max(sizes) < 1_000_000 and sum(sizes) < 10_000_000
    for case in DATA.iterdir():
        if (case / "case.json").exists():
            q = json.loads((case / "case.json").read_text())["qemu"]["qemu"]
            assert (q["major"], q["minor"]) == (10, 0), case.name


def test_every_fixture_mode_has_a_ratchet():
    assert sorted(f"{n}/{m}" for n, m in _cases()) == sorted(json.loads(RATCHET.read_text()))


@pytest.mark.parametrize("name,mode", _cases())
def test_bundle_does_not_drop_below_its_ratchet(name, mode):
    floor = json.loads(RATCHET.read_text())[f"{name}/{mode}"]
    s = score_fixture(DATA, name, mode)
    assert s["total"] == floor["of_fields"] and s["replies"] == floor["of_replies"]
    assert s["fields"] >= floor["fields"] and s["exact"] >= floor["exact"], (name, mode, s)
    if mode in EXACT_MODES:
        assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-500:]


# --- which profile answers --------------------------------------------------------------------

def test_nearest_profile_for_an_unknown_release_warns():
    assert nearest_version("10.0.13", ["7.2", "10.0"]) == ("10.0", True)
    # 11.1's profile was made from 10.2.2's source (formats/qemu-11.1/made_from.json)
    assert nearest_version("10.2.2", ["7.2", "10.0", "11.1"]) == ("11.1", False)
    assert nearest_version("8.2.2", ["7.2", "10.0", "11.1"]) == ("7.2", False)
    assert nearest_version("11.0.0", ["7.2", "10.0", "11.1"]) == ("11.1", False)
    assert nearest_version("9.2.0", ["7.2", "10.0"]) == ("10.0", False)
    assert nearest_version("8.0.0", ["7.2", "10.0"]) == ("7.2", False)
    p = load_profile("9.2.0")
    assert p.version == "10.0"
    assert p.warning == ("QEMU 9.2.0 has no profile (have: 7.2, 10.0, 11.1): answering with the "
                         "nearest, 10.0")
    assert load_profile("7.2.22").warning is None
    assert load_profile("10.2.2").warning == (
        "QEMU 10.2.2 has no profile (have: 7.2, 10.0, 11.1): answering with the nearest, 11.1 "
        "(made from QEMU 10.2.2: the same release)")


def test_a_guest_dump_alone_takes_qemu_option_else_the_newest():
    newest = profile_for(None, None)
    assert (newest.version, newest.release) == ("10.0", "10.0.2")
    assert newest.reason.startswith("no QEMU version in the inputs: the newest profile, 10.0")
    chosen = profile_for(None, None, "7.2")
    assert (chosen.version, chosen.reason) == ("7.2", "--qemu 7.2")


def test_the_core_wins_over_the_qemu_option():
    core = QemuVirtioState(qemu_version=(10, 0, 2), source="core")
    p = profile_for(None, core, "7.2")
    assert p.version == "10.0" and p.reason == "the QEMU core says QEMU 10.0.2"
    assert p.warning == "--qemu 7.2 ignored: the QEMU core says QEMU 10.0.2"


# --- the rules devices.json chooses --------------------------------------------------------------

def _machine(*paths: str) -> VirtioMachine:
    devs = [VirtIODeviceState(canonical_path=p, name="virtio-blk") for p in paths]
    return VirtioMachine(QemuVirtioState(devices=devs, source="core"), None)


def test_no_devices_is_an_error_on_10_and_an_empty_list_on_7_2():
    with pytest.raises(QmpError, match="^No virtio devices found$"):
        x_query_virtio(_machine(), load_profile("10.0"), {})
    assert x_query_virtio(_machine(), load_profile("7.2"), {}) == []


def test_path_lookup_resolves_qom_paths_on_10_and_matches_exactly_on_7_2():
    m = _machine("/machine/peripheral/a/virtio-backend", "/machine/peripheral/b/virtio-backend")
    p10, p72 = load_profile("10.0"), load_profile("7.2")
    cmd = "x-query-virtio-status"
    assert find_device(m, p10, "/machine//peripheral/a/virtio-backend/", cmd).canonical_path \
        == "/machine/peripheral/a/virtio-backend"
    assert find_device(m, p10, "b/virtio-backend", cmd).canonical_path \
        == "/machine/peripheral/b/virtio-backend"
    with pytest.raises(QmpError, match="^Path virtio-backend is not a realized VirtIODevice$"):
        find_device(m, p10, "virtio-backend", cmd)                 # ambiguous
    with pytest.raises(QmpError, match="^Path b/virtio-backend is not a VirtIODevice$"):
        find_device(m, p72, "b/virtio-backend", cmd)


def test_queue_element_resolves_its_path_like_the_other_commands_on_10():
    """qmp_x_query_virtio_queue_element finds its device with qmp_find_virtio_device too (8.2+):
    a QOM-equivalent spelling of a path QEMU answered gets QEMU's own reply."""
    case = DATA / "basic"
    truth = json.loads((case / "truth.json").read_text())["exchanges"]
    req, rep = next((q, r) for q, r in truth if q["execute"] == "x-query-virtio-queue-element"
                    and "return" in r)
    path = req["arguments"]["path"]
    odd = path.replace("/", "//", 1) + "/"
    asks = [{"execute": "qmp_capabilities"},
            dict(req, arguments=dict(req["arguments"], path=odd)),
            dict(req, arguments=dict(req["arguments"], path=path.split("/", 3)[-1]))]
    out = _vdecode("qmp", str(case / "qemu-core+none.vdb.zst"),
                   stdin="".join(json.dumps(a) + "\n" for a in asks)).stdout.splitlines()
    replies = [json.loads(line) for line in out[2:]]
    assert replies == [rep, rep], replies


# --- the real recordings (uncompressed, outside the repository) -----------------------------------

def _recording(name: str) -> Path:
    if not RECORDINGS:
        pytest.skip("VDECODE_CAPTURES_10 is not set: give it a folder of QEMU 10.0 recordings "
                    "(make_captures.sh with VD_QEMU) to read their process cores")
    case = Path(RECORDINGS) / name
    if not (case / "qemu.core").exists():
        pytest.skip(f"{case}: no qemu.core")
    return case


def _vdecode(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vdecode", *args], input=stdin, text=True,
                          capture_output=True, check=True)


@pytest.mark.parametrize("name", ["mixed", "kabortmixed"])
def test_qom_walk_order_of_a_real_core(name):
    case = _recording(name)
    truth = json.loads((case / "truth.json").read_text())["exchanges"]
    want = next(r for q, r in truth if q["execute"] == "x-query-virtio")
    out = _vdecode("qmp", str(case / "qemu.core"),
                   stdin='{"execute":"qmp_capabilities"}\n{"execute":"x-query-virtio"}\n')
    assert json.loads(out.stdout.splitlines()[-1]) == want
    alone = _vdecode("qmp", str(case / "dump.elf"), stdin='{"execute":"qmp_capabilities"}\n')
    assert "profile formats/qemu-10.0 (QEMU 10.0.2): no QEMU version in the inputs" in alone.stderr


def test_info_names_qemu_10_and_the_profile():
    case = _recording("basic")
    out = _vdecode("info", str(case / "qemu.core")).stdout
    assert "\nQEMU:         10.0.2 Debian 1:10.0.2+ds-2+deb13u1~bpo12+1" in out
    assert ("\nprofile:      formats/qemu-10.0/layout-x86_64.json (it lists the core's build-id "
            "0fbbd5ca8d2d0a32532049e20739f3e0d521c5ed)") in out
    assert "\ndevice discovery: qom-tree" in out


@pytest.mark.parametrize("data", ["captures", "captures-10.0"])
def test_a_device_plugged_after_the_log_is_named(data, tmp_path):
    """hotplug (7.2 and 10.0): a virtio-blk was device_add'ed after the early log. Nothing in the
    dump gives its QOM path, but its live driver's rings are there and owned by no logged device:
    the view says so (and what its queue holds: QEMU's last-avail-idx was 31)."""
    import zstandard
    from click.testing import CliRunner

    from vdecode.cli import cli
    bundle = tmp_path / "hotplug.vdb"
    src = DATA.parent / data / "hotplug" / "elf+early.vdb.zst"
    with open(src, "rb") as s, open(bundle, "wb") as d:
        zstandard.ZstdDecompressor().copy_stream(s, d)
    out = CliRunner().invoke(cli, [str(bundle), "--json"])
    assert out.exit_code == 0, out.output
    notes = [n for n in json.loads(out.stdout)["notes"] if "no logged device owns" in n]
    assert len(notes) == 1 and "live virtio-blk driver" in notes[0], notes
    assert "req.0 (desc 0x" in notes[0] and "avail idx 31, used idx 31" in notes[0]

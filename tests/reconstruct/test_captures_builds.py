"""QEMU builds without a hand-made profile of their own: Debian 13's 10.0.13 and 11.1.3.

``tests/data/captures-10.0.13/`` and ``tests/data/captures-11.1/`` hold what
``tools/capture/make_fixtures.py`` made from real recordings (``get_qemu.sh trixie`` and
``get_qemu.sh trixie-backports``; scenarios ``basic`` and ``panicmix``, a guest panic under load
with a mixed device set). The 11.1 recordings skip ``x-query-virtio-status`` (live 11.1.x aborts on
it), so their logs hold no status reply. Scores never fall below each folder's ``ratchet.json`` and
every mode is exact. The 10.0.13 core's bundles carry the build's own strings (read from its
executable when the bundle was made): 10.0.13 prints ``VIRTIO_NET_F_GUEST_USO6`` for bit 55.

``kpanicmix`` is panicmix whose QEMU is then killed with SIGABRT: its core is the Linux kernel's
(``case.json`` ``"core": "kernel"``; truth holds no element queries, asked after). ``vhostrun``
(scenario ``vhostrun.json``; 11.1 adds ``skip_commands``) is a vhost-user-blk served by
qemu-storage-daemon beside a plain virtio-blk, asked while the VM runs and gcore'd at that
instant, vhost started: its only modes are the core's.

``tests/data/captures-10.2/`` is ``panicmix`` recorded with QEMU 10.2.2 built from Debian's sid
source (no Debian binary, no profile of its own: docs/new-captures.md F23). It is answered by the
profile made from 10.2.2's source, 11.1's (``formats/qemu-11.1/made_from.json``), not by the
numerically nearest release's: 10.0's tables lack the UDP tunnel bits 65-68 its tap net offers.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from tests.reconstruct.fidelity import fixture_cases, run_qmp, score_fixture
from vdecode.profiles import load_profile
from vdecode.reconstruct.qmp.features import features_to_reply
from vdecode.sources.qemu_core.strings import labels_against, match_tables, read_feature_maps

DATA = Path(__file__).resolve().parent.parent / "data"
BUILDS = {"captures-10.0.13": (10, 0, 13), "captures-11.1": (11, 1, 3), "captures-10.2": (10, 2, 2)}

pytestmark = pytest.mark.usefixtures("bundle_cache")


def _cases() -> list[tuple[str, str, str]]:
    return [(d, n, m) for d in BUILDS for n, m in fixture_cases(DATA / d)]


def test_fixtures_are_small_and_of_their_build():
    for d, (major, minor, micro) in BUILDS.items():
        sizes = [p.stat().st_size for p in (DATA / d).rglob("*") if p.is_file()]
        assert max(sizes) < 1_000_000 and sum(sizes) < 5_000_000
        names = set()
        for case in (DATA / d).iterdir():
            if (case / "case.json").exists():
                q = json.loads((case / "case.json").read_text())["qemu"]["qemu"]
                assert (q["major"], q["minor"], q["micro"]) == (major, minor, micro), case
                names.add(case.name)
        ratchet = json.loads((DATA / d / "ratchet.json").read_text())
        assert sorted(ratchet) == sorted(f"{n}/{m}" for n, m in fixture_cases(DATA / d))
        if d == "captures-10.2":        # one run of a self-built 10.2.2 (F23)
            assert names == {"panicmix"}
            continue
        assert names == {"basic", "panicmix", "kpanicmix", "vhostrun"} | (
            {"vhostuser"} if d == "captures-11.1" else set()), d
        cores = {n: json.loads((DATA / d / n / "case.json").read_text()).get("core")
                 for n in ("kpanicmix", "vhostrun")}
        assert cores == {"kpanicmix": "kernel", "vhostrun": "gcore"}, d


# An 11.1 early log of a stopped vhost-user-blk holds no status and no queue reply of it (see
# test_11_1_vhost_device_queues_from_its_vhost_replies): nothing says it has no third queue, so
# "Invalid virtqueue number 2" is the one reply not answered.
NOT_EXACT = {("captures-11.1", "vhostuser", m): 1 for m in ("elf+early", "kdump-zlib+early")}


@pytest.mark.parametrize("data,name,mode", _cases())
def test_bundle_is_exact_and_not_below_its_ratchet(data, name, mode):
    floor = json.loads((DATA / data / "ratchet.json").read_text())[f"{name}/{mode}"]
    s = score_fixture(DATA / data, name, mode)
    assert s["total"] == floor["of_fields"] and s["replies"] == floor["of_replies"]
    assert s["fields"] >= floor["fields"] and s["exact"] >= floor["exact"], (name, mode, s)
    missing = NOT_EXACT.get((data, name, mode), 0)
    assert (s["fields"], s["exact"]) == (s["total"] - missing, s["replies"] - missing), \
        s["stderr"][-500:]


def _ask(bundle: Path, requests: list[dict]) -> tuple[list[dict], str]:
    lines, err = run_qmp([str(bundle)], [{"execute": "qmp_capabilities"}, *requests])
    return [json.loads(x) for x in lines if x.strip()][2:], err


@pytest.mark.parametrize("name", ["panicmix", "kpanicmix"])
def test_10_0_13_core_bundle_prints_the_builds_own_uso6_string(name):
    case = DATA / "captures-10.0.13" / name
    path = "/machine/peripheral/nettap/virtio-backend"
    (reply,), err = _ask(case / "qemu-core+none.vdb.zst",
                         [{"execute": "x-query-virtio-status", "arguments": {"path": path}}])
    host = reply["return"]["host-features"]["dev-features"]
    assert "VIRTIO_NET_F_GUEST_USO6: Driver can receive USOv6" in host
    assert not any(s.startswith("VIRTIO_NET_F_GUEST_USO4: Driver can receive USOv6") for s in host)
    assert "(its own tables, not profile 10.0's): 'VIRTIO_NET_F_GUEST_USO6: Driver can receive " \
           "USOv6' (device 55)" in err
    truth = json.loads((case / "truth.json").read_text())["exchanges"]
    want = next(r for q, r in truth if q == {"execute": "x-query-virtio-status",
                                             "arguments": {"path": path}})
    assert reply == want


@pytest.mark.parametrize("name", ["panicmix", "kpanicmix"])
def test_11_1_status_is_answered_for_every_device_from_a_core_with_the_abort_said(name):
    case = DATA / "captures-11.1" / name
    truth = json.loads((case / "truth.json").read_text())["exchanges"]
    assert not any(q["execute"] == "x-query-virtio-status" for q, _ in truth)   # QEMU aborts
    paths = [d["path"] for d in next(r for q, r in truth if q["execute"] == "x-query-virtio")["return"]]
    replies, err = _ask(case / "qemu-core+none.vdb.zst",
                        [{"execute": "x-query-virtio-status", "arguments": {"path": p}} for p in paths])
    assert len(replies) == len(paths) == 7
    schema = load_profile("11.1").table("qapi")["structs"]["VirtioStatus"]
    mandatory = {m["name"] for m in schema if not m.get("optional")}
    for p, r in zip(paths, replies):
        assert mandatory <= set(r["return"]) <= {m["name"] for m in schema}, p
        assert r["return"]["backend-features"] == {"transports": [], "dev-features": []}
        assert f"{p}: live QEMU 11.1.x aborts on x-query-virtio-status" in err
    net = next(r["return"] for p, r in zip(paths, replies) if p.endswith("/nettap/virtio-backend"))
    # a 128-bit host feature word: 11.1's UDP tunnel bits (65-68) by the executable's strings
    assert "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO: Device can receive GSO over UDP tunnel packets" \
        in net["host-features"]["dev-features"]
    assert "unknown-dev-features" not in net["host-features"]


def test_11_1_vhost_status_from_a_running_core_is_10_0_13s_for_the_same_backend():
    """Live 11.1 aborts on x-query-virtio-status, so its VhostStatus is checked against what
    10.0.13 printed for the same scenario and backend: 11.1's vhost_dev keeps no
    backend_features and no protocol_features (they are read from struct vhost_user), and every
    member the two releases share is the same, but for what 11.1's front end acks
    (VIRTIO_BLK_F_SIZE_MAX: the word in 11.1's memory lacks bit 1)."""
    path = "/machine/peripheral/vublk/virtio-backend"
    ask = {"execute": "x-query-virtio-status", "arguments": {"path": path}}
    (got,), err = _ask(DATA / "captures-11.1" / "vhostrun" / "qemu-core+none.vdb.zst", [ask])
    truth = json.loads((DATA / "captures-10.0.13" / "vhostrun" / "truth.json").read_text())
    want = next(r["return"] for q, r in truth["exchanges"] if q == ask)
    got, want = got["return"]["vhost-dev"], want["vhost-dev"]
    assert set(want) - set(got) == {"backend-features"} and set(got) <= set(want)
    assert got["protocol-features"] == want["protocol-features"] != {"protocols": []}
    size_max = "VIRTIO_BLK_F_SIZE_MAX: Max segment size is size_max"
    assert set(want["acked-features"]["dev-features"]) - set(got["acked-features"]["dev-features"]) \
        == {size_max}
    same = {k for k in got if k != "acked-features"}
    assert {k: got[k] for k in same} == {k: want[k] for k in same}
    assert f"{path}: live QEMU 11.1.x aborts on x-query-virtio-status" in err


def test_a_started_vhost_devices_queues_are_its_own_vhost_dev():
    """From a running core: the vhost_dev whose vqs point back at it, not the first heap word
    that holds the device's address (which gave garbage and a third queue before)."""
    path = "/machine/peripheral/vublk/virtio-backend"
    for data in ("captures-10.0.13", "captures-11.1"):
        replies, _ = _ask(DATA / data / "vhostrun" / "qemu-core+none.vdb.zst", [
            {"execute": "x-query-virtio-vhost-queue-status", "arguments": {"path": path, "queue": q}}
            for q in (0, 1, 2)])
        truth = json.loads((DATA / data / "vhostrun" / "truth.json").read_text())["exchanges"]
        for q, r in zip((0, 1), replies):
            want = next(w for a, w in truth if a["execute"] == "x-query-virtio-vhost-queue-status"
                        and a["arguments"] == {"path": path, "queue": q})
            assert r == want and r["return"]["desc-phys"], (data, q)
        assert replies[2] == {"error": {"class": "GenericError",
                                        "desc": "Invalid vhost virtqueue number 2"}}, data
        members = set(replies[0]["return"])
        assert ({"desc", "avail", "used"} & members) == (set() if data == "captures-11.1"
                                                          else {"desc", "avail", "used"}), data


def test_11_1_vhost_device_queues_from_its_vhost_replies():
    """The recorder asks a running vhost device no queue status (GET_VRING_BASE would stop its
    ring) and 11.1 no status: the early log's vhost queue replies give the queues' rings (the one
    the driver never set up is all zeros there), and the counters come from the rings at the
    dump, where the stop synced them."""
    case = DATA / "captures-11.1" / "vhostuser"
    path = "/machine/peripheral/vublk/virtio-backend"
    early = [json.loads(x)["msg"] for x in (case / "early.jsonl").read_text().splitlines()]
    asked = {(m["execute"], m.get("arguments", {}).get("path")) for m in early if "execute" in m}
    assert ("x-query-virtio-vhost-queue-status", path) in asked
    assert not {("x-query-virtio-queue-status", path), ("x-query-virtio-status", path)} & asked
    truth = json.loads((case / "truth.json").read_text())["exchanges"]
    asks = [{"execute": "x-query-virtio-queue-status", "arguments": {"path": path, "queue": q}}
            for q in (0, 1)]
    replies, err = _ask(case / "elf+early.vdb.zst", asks)
    for a, r in zip(asks, replies):
        want = next(w for q, w in truth if q == a)
        assert r == want, (a, err[-300:])
    assert replies[0]["return"]["last-avail-idx"] > 0 and replies[1]["return"]["vring-desc"] == 0


def test_11_1_log_without_status_infers_packed_but_answers_no_status():
    """The 11.1 early log has no status reply: the packed virtio-net is known packed from its
    ring (element queries get QEMU's 'Packed ring not supported'), and a status question says
    what is missing instead of printing the few bits the rings show."""
    case = DATA / "captures-11.1" / "panicmix"
    path = "/machine/peripheral/netpk/virtio-backend"
    (elem, status), _ = _ask(case / "elf+early.vdb.zst", [
        {"execute": "x-query-virtio-queue-element", "arguments": {"path": path, "queue": 0}},
        {"execute": "x-query-virtio-status", "arguments": {"path": path}}])
    assert elem == {"error": {"class": "GenericError", "desc": "Packed ring not supported"}}
    assert "guest_features" in status["error"]["desc"]


def test_11_1_schema_changes():
    p = load_profile("11.1")
    qapi = p.table("qapi")["structs"]
    assert "backend-features" not in [m["name"] for m in qapi["VhostStatus"]]
    assert not {"desc", "avail", "used"} & {m["name"] for m in qapi["VirtVhostQueueStatus"]}
    assert "unknown-dev-features2" in [m["name"] for m in qapi["VirtioDeviceFeatures"]]
    # qmp_decode_features prints the low half of what no row names (has_unknown_dev_features2
    # is never set)
    assert features_to_reply(p, 4, (1 << 100) | 1) == {"transports": [], "dev-features": [],
                                                       "unknown-dev-features": 1}
    assert features_to_reply(p, 4, 1 << 100)["unknown-dev-features"] == 0


def test_a_version_less_input_does_not_assume_11_1():
    assert load_profile(None).version == "10.0"


# --- the executable's tables ----------------------------------------------------------------------

def _elf(tables: list[list[tuple[int, str]]]) -> bytes:
    """A minimal PIE-like ELF64: ``.rodata`` strings, ``.data.rel.ro`` entries
    ``{u32 value, pad, const char *}`` whose pointers are only R_X86_64_RELATIVE relocations
    (zero in the file, as a linker leaves them), ``.rela.dyn``; section headers only."""
    ro_addr, rel_addr = 0x1000, 0x8000
    rodata, ptrs, data = bytearray(b"\0"), [], bytearray(16)   # a leading non-table entry
    for rows in tables:
        for value, desc in [*rows, (0xFFFFFFFF, "")]:
            at = len(rodata) if desc else 0
            if desc:
                rodata += desc.encode() + b"\0"
            ptrs.append((rel_addr + len(data) + 8, ro_addr + at))
            data += struct.pack("<IIQ", value, 0, 0)
    rela = b"".join(struct.pack("<QQq", off, 8, add) for off, add in ptrs)
    names = b"\0.rodata\0.data.rel.ro\0.rela.dyn\0.shstrtab\0"
    body = bytearray(64)
    offs = []
    for blob in (bytes(rodata), bytes(data), rela, names):
        offs.append(len(body))
        body += blob
    shoff = len(body)
    sh = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    for (name, typ, addr, ent), off, blob in zip(
            ((1, 1, ro_addr, 0), (9, 1, rel_addr, 0), (22, 4, 0, 24), (32, 3, 0, 0)), offs,
            (rodata, data, rela, names)):
        sh.append(struct.pack("<IIQQQQIIQQ", name, typ, 2, addr, off, len(blob), 0, 0, 8, ent))
    body += b"".join(sh)
    hdr = (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff,
                                                            0, 64, 0, 0, 64, len(sh), 4))
    body[:64] = hdr
    return bytes(body)


def test_read_feature_maps_follows_relocations(tmp_path):
    tables = [[(0, "VIRTIO_NET_F_CSUM: Device handling packets with partial checksum supported"),
               (55, "VIRTIO_NET_F_GUEST_USO6: Driver can receive USOv6")],
              [(4, "VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready")]]
    exe = tmp_path / "qemu-system-x86_64"
    exe.write_bytes(_elf(tables))
    assert read_feature_maps(str(exe)) == tables
    assert read_feature_maps(str(tmp_path / "absent")) == []


def test_tables_are_matched_by_their_own_rows_and_differences_become_labels():
    features = load_profile("10.0").table("features")
    net = [(r["bit"], r["desc"]) for r in features["devices"]["1"]["rows"]]
    uso6 = [(b, "VIRTIO_NET_F_GUEST_USO6: Driver can receive USOv6" if b == 55 else d)
            for b, d in net]
    shared = [(26, "VHOST_F_LOG_ALL: Logging write descriptors supported"),
              (30, "VHOST_USER_F_PROTOCOL_FEATURES: Vhost-user protocol features negotiation "
                   "supported")]
    matched = match_tables([uso6, shared], features)
    assert matched["virtio_net_feature_map"] == uso6
    # a table of vhost's shared rows only stands for every map that is exactly those rows
    assert {"virtio_rng_feature_map", "virtio_input_feature_map"} <= set(matched)
    assert labels_against([uso6, shared], features) == [
        ("devices/1", 55, "VIRTIO_NET_F_GUEST_USO6: Driver can receive USOv6")]
    assert labels_against([[(1, "VIRTIO_I2C_F_ZERO_LENGTH_REQUEST: x")]], features) == []


def test_rows_the_profile_lacks_are_added_where_the_executables_table_has_them():
    """A newer build's table has rows the profile's lacks (10.2's UDP tunnel bits 65-68 in
    virtio-net's map, after VHOST_USER_F_PROTOCOL_FEATURES): they become labels with the row
    before them, and the reply lists them in QEMU's order (reverse table order), not as unknown
    bits."""
    from dataclasses import replace

    from vdecode.profiles import LearnedLabel
    from vdecode.sources.bundle_notes import _labels

    features = load_profile("10.0").table("features")
    net = [(r["bit"], r["desc"]) for r in features["devices"]["1"]["rows"]]
    at = [b for b, _ in net].index(30) + 1
    tunnel = [(65, "VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO: Driver can receive GSO over UDP tunnel "
                   "packets"),
              (67, "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO: Device can receive GSO over UDP tunnel "
                   "packets")]
    exe = net[:at] + tunnel + net[at:]
    labels = labels_against([exe], features)
    assert [lab for lab in labels if lab[0] == "devices/1"] == [
        ("devices/1", 65, tunnel[0][1], 30), ("devices/1", 67, tunnel[1][1], 65)]
    assert _labels([list(lab) for lab in labels]) == tuple(labels)     # a bundle keeps them
    plain = load_profile("10.0")
    prof = replace(plain, learned=tuple(LearnedLabel(*lab[:3], "the executable's table", "t",
                                                     lab[3]) for lab in labels))
    bits = (1 << 65) | (1 << 67) | (1 << 30) | (1 << 5) | 1
    got = features_to_reply(prof, 1, bits)["dev-features"]
    want = [d for b, d in reversed(exe) if bits >> b & 1]
    assert got == want and "unknown-dev-features" not in features_to_reply(prof, 1, bits)
    assert tunnel[0][1] not in features_to_reply(plain, 1, bits)["dev-features"]


_B102 = [os.environ.get("VDECODE_QEMU_10_2_BINARY", ""),
         str(DATA.parent.parent.parent / "rec" / "b102" / "build" / "qemu-system-x86_64")]
_B102_ID = "4feade9882b450a5dc47cad8c4bce170a10c0c77"       # the recorded 10.2.2 (panicmix)


def _b102() -> str | None:
    from vdecode.sources.files import FileView
    from vdecode.sources.qemu_core.process import read_build_id_file

    for c in _B102:
        if c and Path(c).is_file():
            view = FileView(c)
            try:
                if read_build_id_file(view) == _B102_ID:
                    return c
            finally:
                view.close()
    return None


def test_the_10_2_executables_tables_answer_with_10_0s_profile_too():
    """The recorded 10.2.2's own tables over 10.0's profile (as if 11.1's, made from 10.2.2, were
    not shipped): its tap net's host features, UDP tunnel bits included, are what QEMU printed."""
    from dataclasses import replace

    from vdecode.profiles import LearnedLabel
    from vdecode.sources.qemu_core.strings import build_labels

    exe = _b102()
    if exe is None:
        pytest.skip(f"needs the QEMU 10.2.2 executable recorded (build-id {_B102_ID}): set "
                    f"VDECODE_QEMU_10_2_BINARY")
    truth = json.loads((DATA / "captures-10.2" / "panicmix" / "truth.json").read_text())
    want = next(rep["return"]["host-features"] for req, rep in truth["exchanges"]
                if req.get("execute") == "x-query-virtio-status"
                and req["arguments"]["path"] == "/machine/peripheral/nettap/virtio-backend")
    f11 = load_profile("11.1").table("features")
    bits = sum(1 << r["bit"] for r in [*f11["devices"]["1"]["rows"], *f11["transport"]]
               if r["desc"] in want["dev-features"] + want["transports"])
    plain = load_profile("10.0")
    labels = build_labels(exe, "10.0")
    prof = replace(plain, learned=tuple(LearnedLabel(*lab[:3], "the executable's table", exe,
                                                     lab[3] if len(lab) > 3 else None)
                                        for lab in labels))
    assert features_to_reply(plain, 1, bits) != want
    assert features_to_reply(prof, 1, bits) == want


def test_the_11_1_layout_is_the_10_2_probe_with_feature_words_widened():
    """The probe of the 10.2.2 tree gives every offset of formats/qemu-11.1's layout (the feature
    words sit in anonymous unions, which the DWARF reader descends); the profile widens the six
    feature words to the 128 bits 10.2's VIRTIO_DECLARE_FEATURES declares. But for vhost_dev past
    acked_features: 11.1 dropped backend_features and protocol_features (measured on a running
    11.1.3 core, the vhostrun recording), so what follows sits 24 bytes earlier."""
    from vdecode.sources.dwarf_profile import profile_from_dwarf

    probe = DATA / "qemu-10.2-layout-probe-x86_64.o"
    shipped = load_profile("11.1").table("layout-x86_64")
    derived = profile_from_dwarf(str(probe), load_profile("10.0").table("layout-x86_64"))
    widened = {("VirtIODevice", n) for n in ("host_features", "guest_features", "backend_features")} \
        | {("vhost_dev", n) for n in ("features", "acked_features", "backend_features")}
    moved = {"max_queues", "backend_cap", "started", "log_enabled", "log_size", "vhost_ops"}
    for name, body in shipped["structs"].items():
        if name == "vhost_user":          # not in the probe: 11.1's protocol_features moved there
            assert body["fields"][-1]["name"] == "protocol_features"
            continue
        got = {f["name"]: f for f in derived["structs"][name]["fields"]}
        if name == "vhost_dev":
            assert body["size"] == derived["structs"][name]["size"] - 24
            assert {"backend_features", "protocol_features"} <= set(got) - \
                {f["name"] for f in body["fields"]}
        else:
            assert derived["structs"][name]["size"] == body["size"], name
        for f in body["fields"]:
            if name == "vhost_dev" and f["name"] in moved | {"opaque"}:
                if f["name"] in got:
                    assert got[f["name"]]["offset"] == f["offset"] + 24, f["name"]
                continue
            g = got[f["name"]]
            assert g["offset"] == f["offset"], (name, f["name"])
            if (name, f["name"]) in widened:
                assert (g["size"], f["size"], f["type"]) == (8, 16, "u128")
            else:
                assert (g["size"], g["type"]) == (f["size"], f["type"]), (name, f["name"])


def test_known_builds_of_a_profile_name_rows_of_its_tables():
    """formats/qemu-10.0's layout knows 10.0.13 by build-id: its release and its own strings,
    each for a row the profile's tables hold (so a 10.0.13 core without its executable is named
    10.0.13 and printed with USO6)."""
    profile = load_profile("10.0")
    builds = profile.table("layout-x86_64")["builds"]
    assert builds["e5588a4ae9dc724ce182d9d2421089e0668fd1bd"]["qemu"] == "10.0.13"
    features = profile.table("features")
    for build in builds.values():
        for section, bit, desc in build["labels"]:
            head, _, dev = section.partition("/")
            rows = features["devices"][dev]["rows"] if head == "devices" else features[head]
            old = next(r["desc"] for r in rows if r.get("bit", r.get("mask")) == bit)
            assert old != desc and old.split(":")[1] == desc.split(":")[1]

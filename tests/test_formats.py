"""formats/: every file names its source and generator, tables are sane, and the strings are the ones
real QEMU printed in the captures' ``truth.json``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORMATS = REPO / "formats"
GENERATED = ("features", "devices", "qapi", "errors")
VERSIONS = sorted(p for p in FORMATS.glob("qemu-*") if p.is_dir())


def load(version: Path, name: str):
    return json.loads((version / f"{name}.json").read_text())


def bit_tables(features: dict) -> dict[str, list[dict]]:
    tables = {"transport": features["transport"], "vhost_user_protocol": features["vhost_user_protocol"]}
    for dev, entry in features["devices"].items():
        tables[f"devices[{dev}]"] = entry["rows"]
    return tables


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
@pytest.mark.parametrize("name", GENERATED)
def test_file_names_its_source_and_generator(version, name):
    data = load(version, name)
    assert data["qemu"].startswith(version.name.removeprefix("qemu-"))
    assert data["source"].strip()
    assert data["generated_by"] == "tools/gen_formats.py"
    assert (REPO / data["generated_by"]).exists()


def test_every_version_folder_has_the_same_files():
    names = {v.name: sorted(p.name for p in v.glob("*.json") if not p.name.startswith("layout-")) for v in VERSIONS}
    assert len(set(map(tuple, names.values()))) == 1, names
    for v in VERSIONS:
        assert set(f"{n}.json" for n in GENERATED) <= set(names[v.name])


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_feature_bits_in_range_and_unique_per_table(version):
    features = load(version, "features")
    for table, rows in bit_tables(features).items():
        bits = [r["bit"] for r in rows]
        assert all(0 <= b < 64 for b in bits), table
        assert len(set(bits)) == len(bits), table
        assert all(r["desc"].strip() for r in rows), table
    for key in ("status", "vring_desc_flags"):
        masks = [r["mask"] for r in features[key]]
        assert all(m > 0 and m & (m - 1) == 0 for m in masks), key          # one bit each
        assert len(set(masks)) == len(masks), key
    assert all(m["mask"] < 0x100 for m in features["status"])                 # status is a uint8
    for dev, entry in features["devices"].items():
        assert (entry["map"] is None) == (entry["rows"] == []), dev


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_devices_and_qapi_shapes(version):
    devices = load(version, "devices")
    assert devices["names"]["1"] == "virtio-net" and devices["names"]["2"] == "virtio-blk"
    assert devices["endian"] == {"0": "unknown", "1": "little", "2": "big"}
    assert devices["queue_max"] == 1024 and devices["vring_align_default"] == 4096
    qapi = load(version, "qapi")
    for struct in ("VirtioStatus", "VirtQueueStatus", "VirtVhostQueueStatus", "VirtioQueueElement",
                   "VirtioRingDesc", "VirtioRingAvail", "VirtioRingUsed", "VirtioInfo", "VhostStatus",
                   "VirtioDeviceFeatures", "VirtioDeviceStatus", "VhostDeviceProtocols"):
        members = qapi["structs"][struct]
        assert members and all(set(m) == {"name", "optional", "type"} for m in members), struct
    args = qapi["commands"]["x-query-virtio-queue-element"]["args"]
    assert [(a["name"], a["type"], a["optional"]) for a in args] == [
        ("path", "str", False), ("queue", "uint16", False), ("index", "uint16", True)]


def test_generator_reproduces_the_committed_files():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import gen_formats
    finally:
        sys.path.pop(0)
    for name, obj in gen_formats.build().items():
        assert (FORMATS / "qemu-7.2" / f"{name}.json").read_text() == gen_formats.dumps(obj) + "\n", name


# --- against the real captures -------------------------------------------------------------------

def walk_feature_lists(obj, out: dict[str, set[str]]) -> None:
    """Collect the strings of every ``transports``/``dev-features``/``statuses``/``protocols`` list."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("transports", "dev-features", "statuses", "protocols") and isinstance(v, list):
                out.setdefault(k, set()).update(v)
            else:
                walk_feature_lists(v, out)
    elif isinstance(obj, list):
        for v in obj:
            walk_feature_lists(v, out)


def test_every_string_qemu_printed_is_in_the_tables(captures):
    features = load(FORMATS / "qemu-7.2", "features")
    known = {
        "transports": {r["desc"] for r in features["transport"]},
        "dev-features": {r["desc"] for e in features["devices"].values() for r in e["rows"]},
        "statuses": {r["desc"] for r in features["status"]},
        "protocols": {r["desc"] for r in features["vhost_user_protocol"]},
    }
    seen: dict[str, set[str]] = {}
    for cap in captures.values():
        for _req, reply in cap.truth:
            walk_feature_lists(reply.get("return"), seen)
    assert seen.get("transports") and seen.get("dev-features") and seen.get("statuses")
    for key, strings in seen.items():
        assert strings <= known[key], (key, strings - known[key])


def test_device_features_come_from_the_table_of_their_device_id(captures):
    features = load(FORMATS / "qemu-7.2", "features")
    checked = 0
    for cap in captures.values():
        for _req, reply in cap.truth:
            ret = reply.get("return")
            if not isinstance(ret, dict) or "device-id" not in ret:
                continue
            rows = {r["desc"] for r in features["devices"][str(ret["device-id"])]["rows"]}
            for key in ("guest-features", "host-features", "backend-features"):
                assert set(ret[key]["dev-features"]) <= rows
                checked += 1
    assert checked


def test_vring_desc_flag_names_are_the_printed_ones(captures):
    names = {r["name"] for r in load(FORMATS / "qemu-7.2", "features")["vring_desc_flags"]}
    seen = set()
    for cap in captures.values():
        for req, reply in cap.truth:
            if req.get("execute") == "x-query-virtio-queue-element" and "return" in reply:
                for d in reply["return"]["descs"]:
                    seen.update(d["flags"])
    assert seen and seen <= names


def printf_regex(fmt: str) -> re.Pattern:
    parts = re.split(r"(%[sdu])", fmt)
    rx = "".join({"%s": ".+", "%d": "-?[0-9]+", "%u": "[0-9]+"}.get(p, re.escape(p)) for p in parts)
    return re.compile(rx + r"\Z")


def test_every_error_reply_matches_its_commands_template(captures):
    errors = load(FORMATS / "qemu-7.2", "errors")
    matched = 0
    for cap in captures.values():
        for req, reply in cap.truth:
            if "error" not in reply:
                continue
            templates = errors["commands"].get(req["execute"], {}).values()
            desc = reply["error"]["desc"]
            assert any(printf_regex(t).match(desc) for t in templates), (req, desc)
            assert reply["error"]["class"] == errors["classes"]["default"]
            matched += 1
    assert matched

"""formats/: every file names its source and generator, tables are sane, and the tables produce what real
QEMU printed: every reply in the captures' ``truth.json`` (``../shared/captures`` and
``../shared/captures-targets``, see conftest, and the cases recorded into ``tests/data/captures``) is
checked against the profile of its QEMU version.

Checked per reply: each feature/status/protocol/flag string is a row of the right table, the list is in
reverse table order (``CONVERT_FEATURES`` prepends), the unknown bits are bits no row decodes; each error
text fits its ``errors.json`` template and class; each object's members are ``qapi.json``'s members and
print in the order QEMU's QDict gives them when inserted in ``qapi.json`` order.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
from pathlib import Path

import pytest

from tests.conftest import NO_CAPTURES, capture_folders
from vdecode.render.qmp_json import qdict_order

REPO = Path(__file__).resolve().parent.parent
FORMATS = REPO / "formats"
GENERATED = ("features", "devices", "qapi", "errors", "qmp_core")
HAND_KEPT = ("queues", "transport", "view", "record", "made_from")
VERSIONS = sorted(p for p in FORMATS.glob("qemu-*") if p.is_dir())
RECORDED = REPO / "tests" / "data" / "captures"
RECORDED_10 = REPO / "tests" / "data" / "captures-10.0"
QEMU_SRC = os.environ.get("VDECODE_QEMU_SRC")
SHARED_MISSING = NO_CAPTURES


def load(version: Path, name: str):
    return json.loads((version / f"{name}.json").read_text())


def bit_tables(features: dict) -> dict[str, list[dict]]:
    tables = {"transport": features["transport"], "vhost_user_protocol": features["vhost_user_protocol"]}
    for dev, entry in features["devices"].items():
        tables[f"devices[{dev}]"] = entry["rows"]
    return tables


# --- the files themselves --------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
@pytest.mark.parametrize("name", GENERATED + HAND_KEPT)
def test_file_names_its_source_and_generator(version, name):
    data = load(version, name)
    assert data["qemu"].startswith(version.name.removeprefix("qemu-") + ".")
    assert data["source"].strip()
    if name in GENERATED:
        # features.json of a release without its source: the executable's tables over the
        # nearest tree's (docs/profile.md)
        assert data["generated_by"] in ("tools/gen_formats.py", "tools/features_from_binary.py")
        assert (REPO / data["generated_by"]).exists()
    else:
        assert data["generated_by"].startswith("hand-written from the source")


def test_every_version_folder_has_the_same_files():
    names = {v.name: sorted(p.name for p in v.glob("*.json") if not p.name.startswith("layout-")) for v in VERSIONS}
    assert len(set(map(tuple, names.values()))) == 1, names
    for v in VERSIONS:
        assert set(f"{n}.json" for n in GENERATED + HAND_KEPT) <= set(names[v.name])
        assert list(v.glob("layout-*.json")), v


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_every_version_has_the_same_keys(version):
    """A key one version has, every version has (a rule 10.0 changes is given for 7.2 too)."""
    first = VERSIONS[0]
    for name in GENERATED + HAND_KEPT:
        # facts only a release that needs them states (11.1: the command its live QEMU aborts
        # on, and that a version-less input is not answered as it)
        own = {"live_aborts", "assumed_without_version"}
        assert set(load(version, name)) - own == set(load(first, name)) - own, name


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_feature_bits_in_range_and_unique_per_table(version):
    features = load(version, "features")
    # 64-bit feature words up to 10.1; 10.2 made them 128-bit (unknown-dev-features2)
    qapi = load(version, "qapi")["structs"]["VirtioDeviceFeatures"]
    width = 128 if "unknown-dev-features2" in [m["name"] for m in qapi] else 64
    for table, rows in bit_tables(features).items():
        bits = [r["bit"] for r in rows]
        assert all(0 <= b < width for b in bits), table
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
    assert set(load(version, "features")["devices"]) <= set(devices["names"])
    qapi = load(version, "qapi")
    for struct in ("VirtioStatus", "VirtQueueStatus", "VirtVhostQueueStatus", "VirtioQueueElement",
                   "VirtioRingDesc", "VirtioRingAvail", "VirtioRingUsed", "VirtioInfo", "VhostStatus",
                   "VirtioDeviceFeatures", "VirtioDeviceStatus", "VhostDeviceProtocols"):
        members = qapi["structs"][struct]
        assert members and all(set(m) == {"name", "optional", "type"} for m in members), struct
    args = qapi["commands"]["x-query-virtio-queue-element"]["args"]
    assert [(a["name"], a["type"], a["optional"]) for a in args] == [
        ("path", "str", False), ("queue", "uint16", False), ("index", "uint16", True)]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_discovery_rules_and_their_texts_agree(version):
    """device_discovery 'qom-tree' (8.2+) errors on an empty list; 'virtio_list' (7.2) returns []."""
    devices, errors = load(version, "devices"), load(version, "errors")
    assert devices["device_discovery"] in ("virtio_list", "qom-tree")
    assert devices["device_lookup"] in ("virtio_list", "object_resolve_path")
    if devices["device_discovery"] == "qom-tree":
        assert errors["no_devices"] == errors["commands"]["x-query-virtio"]["no_devices"]
    else:
        assert errors["no_devices"] is None and "x-query-virtio" not in errors["commands"]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_layout_profile_names_the_same_devices(version):
    from vdecode.sources.qemu_core.layout import QemuLayout

    for path in version.glob("layout-*.json"):
        layout = json.loads(path.read_text())
        assert layout["qemu"].startswith(version.name.removeprefix("qemu-") + ".")
        assert layout["virtio_device_names"] == load(version, "devices")["names"]
        assert layout["virtio_queue_max"] == load(version, "devices")["queue_max"]
        QemuLayout(layout, path.name)                           # fields fit, types known


def test_qemu_10_layout_has_what_a_qom_walk_reads():
    layout = load(FORMATS / "qemu-10.0", "layout-x86_64")
    fields = {s: {f["name"] for f in b["fields"]} for s, b in layout["structs"].items()}
    assert {"class", "properties", "ref", "parent"} <= fields["Object"]
    assert {"name", "type", "opaque"} <= fields["ObjectProperty"]
    assert {"size", "nnodes", "keys", "hashes", "values"} <= fields["GHashTable"]
    assert {"canonical_path", "realized"} <= fields["DeviceState"]
    assert [b["name"] for b in layout["bitfields"]["GHashTable"]] == ["have_big_keys", "have_big_values"]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_generated_files_regenerate_byte_for_byte(version, tmp_path):
    """``gen_formats.py --qemu-src $VDECODE_QEMU_SRC`` writes the shipped files of that tree's version."""
    if not QEMU_SRC:
        pytest.skip("VDECODE_QEMU_SRC is not set: give it a QEMU source tree (apt-get source qemu) "
                    "to regenerate its formats/ folder")
    import subprocess
    import sys
    tree = Path(QEMU_SRC)
    want = (tree / "VERSION").read_text().strip()
    if not want.startswith(version.name.removeprefix("qemu-") + "."):
        pytest.skip(f"VDECODE_QEMU_SRC={QEMU_SRC} is QEMU {want}, not {version.name}")
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_formats.py"), "--qemu-src", str(tree),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in GENERATED:
        assert (tmp_path / f"{name}.json").read_bytes() == (version / f"{name}.json").read_bytes(), name


# --- against the real captures -------------------------------------------------------------------

def read_truth(folder: Path) -> dict:
    name = json.loads((folder / "case.json").read_text()).get("truth", "truth.json")
    for cand in [folder / name] + sorted(folder.glob("truth.json*")):
        if not cand.exists():
            continue
        data = cand.read_bytes()
        if cand.suffix == ".zst":
            import zstandard
            data = zstandard.ZstdDecompressor().stream_reader(data).read()
        elif cand.suffix == ".gz":
            data = gzip.decompress(data)
        elif cand.suffix == ".xz":
            data = lzma.decompress(data)
        return json.loads(data)
    raise FileNotFoundError(f"{folder}: no truth.json")


def truths(root: Path) -> list[tuple[str, dict]]:
    if not root.is_dir():
        return []
    return [(p.name, read_truth(p)) for p in sorted(root.iterdir()) if (p / "case.json").exists()]


@pytest.fixture(scope="module", params=["shared", "recorded", "recorded-10.0"])
def corpus(request) -> list[tuple[str, dict]]:
    """``(case, truth)`` of ../shared/captures and ../shared/captures-targets (conftest's capture
    folders), of tests/data/captures (QEMU 7.2) or of tests/data/captures-10.0 (QEMU 10.0.2)."""
    if request.param == "shared":
        found = [(name, read_truth(folder)) for name, folder in capture_folders().items()]
        if not found:
            pytest.skip(SHARED_MISSING)
    else:
        root = RECORDED if request.param == "recorded" else RECORDED_10
        found = truths(root)
        assert found, f"{root}: no recorded cases"
    return found


def profile_of(truth: dict) -> Path:
    q = truth["qemu"]["qemu"]
    folder = FORMATS / f"qemu-{q['major']}.{q['minor']}"
    assert folder.is_dir(), f"no formats/ profile for QEMU {q}"
    return folder


def exchanges(corpus):
    for case, truth in corpus:
        folder = profile_of(truth)
        for req, reply in truth["exchanges"]:
            yield case, folder, req, reply


def decoded(strings: list[str], rows: list[dict], key: str = "bit") -> int:
    """The bits ``strings`` stand for in ``rows``; they must be rows of it, in reverse table order."""
    by_desc = {r["desc"]: r[key] for r in rows}
    assert set(strings) <= set(by_desc), set(strings) - set(by_desc)
    assert strings == [r["desc"] for r in reversed(rows) if r["desc"] in set(strings)], strings
    bits = [1 << by_desc[s] if key == "bit" else by_desc[s] for s in strings]
    return sum(bits)


def table_bits(rows: list[dict], key: str = "bit") -> int:
    return sum(1 << r[key] if key == "bit" else r[key] for r in rows)


def check_features(obj: dict, device_id: int, features: dict) -> None:
    """A ``VirtioDeviceFeatures`` as ``qmp_decode_features`` builds it from one bitmap."""
    transport = features["transport"]
    rows = features["devices"][str(device_id)]["rows"]
    t = decoded(obj["transports"], transport)
    d = decoded(obj["dev-features"], rows)                  # has_dev_features is always true
    assert t & d == 0                                        # transport bits are consumed first
    unknown = obj.get("unknown-dev-features", 0)
    assert ("unknown-dev-features" in obj) == (unknown != 0)
    assert unknown & (table_bits(transport) | table_bits(rows)) == 0


def check_masks(obj: dict, strings: str, unknown_key: str, rows: list[dict], key: str) -> None:
    decoded(obj[strings], rows, key)
    unknown = obj.get(unknown_key, 0)
    assert (unknown_key in obj) == (unknown != 0)
    assert unknown & table_bits(rows, key) == 0


def test_every_string_qemu_printed_comes_from_the_tables(corpus):
    seen = {"transports": 0, "statuses": 0, "flags": 0}
    for _case, folder, req, reply in exchanges(corpus):
        features = load(folder, "features")
        ret = reply.get("return")
        if req["execute"] == "x-query-virtio-status" and ret:
            dev = ret["device-id"]
            for key in ("guest-features", "host-features", "backend-features"):
                check_features(ret[key], dev, features)
                seen["transports"] += len(ret[key]["transports"])
            check_masks(ret["status"], "statuses", "unknown-statuses", features["status"], "mask")
            seen["statuses"] += len(ret["status"]["statuses"])
            if "vhost-dev" in ret:
                for key in ("features", "acked-features", "backend-features"):
                    check_features(ret["vhost-dev"][key], dev, features)
                check_masks(ret["vhost-dev"]["protocol-features"], "protocols", "unknown-protocols",
                            [dict(r, bit=r["bit"]) for r in features["vhost_user_protocol"]], "bit")
        elif req["execute"] == "x-query-virtio-queue-element" and ret:
            rows = [{"desc": r["name"], "mask": r["mask"]} for r in features["vring_desc_flags"]]
            for d in ret["descs"]:
                decoded(d["flags"], rows, "mask")
                seen["flags"] += len(d["flags"])
    assert all(seen.values()), seen


def test_device_names_are_the_table_of_their_device_id(corpus):
    names_seen = 0
    for _case, folder, req, reply in exchanges(corpus):
        names = load(folder, "devices")["names"]
        ret = reply.get("return")
        if req["execute"] == "x-query-virtio-status" and ret:
            assert ret["name"] == names[str(ret["device-id"])]
            assert ret["device-endian"] in load(folder, "devices")["endian"].values()
            names_seen += 1
        elif req["execute"] == "x-query-virtio" and ret:
            assert {d["name"] for d in ret} <= set(names.values())
    assert names_seen


def printf_regex(fmt: str) -> re.Pattern:
    parts = re.split(r"(%[sdu])", fmt)
    rx = "".join({"%s": "(.+)", "%d": "(-?[0-9]+)", "%u": "([0-9]+)"}.get(p, re.escape(p)) for p in parts)
    return re.compile(rx + r"\Z")


ARG_ERRORS = {"missing": None, "not_string": ("str",), "expects_uint64": ("uint16", "uint32", "uint64", "int"),
              "expects_uint16": ("uint16",), "unexpected": None}


def test_every_error_reply_matches_a_template_of_its_command(corpus):
    """Command errors fit ``errors.json["commands"][cmd]``, argument errors name an argument of
    ``qapi.json``'s command (of the right type; ``unexpected`` one it does not have), core errors
    fit their key; the class is ``classes[key]`` or the default."""
    matched = 0
    for _case, folder, req, reply in exchanges(corpus):
        if "error" not in reply:
            continue
        errors, qapi = load(folder, "errors"), load(folder, "qapi")
        cmd, desc, cls = req["execute"], reply["error"]["desc"], reply["error"]["class"]
        args = {a["name"]: a["type"] for a in qapi["commands"].get(cmd, {}).get("args", [])}
        hits = [k for k, t in errors["commands"].get(cmd, {}).items() if printf_regex(t).match(desc)]
        for key, types in ARG_ERRORS.items():
            m = printf_regex(errors[key]).match(desc)
            if m and cmd in qapi["commands"]:
                name = m.group(1)
                assert (name not in args) if key == "unexpected" else (name in args), (req, desc)
                assert types is None or key == "unexpected" or args[name] in types, (req, desc)
                hits.append(key)
        if printf_regex(errors["command_not_found"]).match(desc):
            assert cmd not in qapi["commands"]
            hits.append("command_not_found")
        assert hits, (req, desc)
        assert cls in {errors["classes"].get(k, errors["classes"]["default"]) for k in hits}, (req, cls)
        matched += 1
    assert matched


def struct_of(qapi: dict, command: str):
    return qapi["commands"][command]["returns"]


def check_order(value, qtype, qapi: dict, where: str) -> int:
    """Members of every object under ``value`` (QAPI type ``qtype``): known, required present, and in
    the QDict order of their schema order. Returns the number of objects checked."""
    if isinstance(qtype, list):
        return sum(check_order(v, qtype[0], qapi, where) for v in value)
    if qtype not in qapi["structs"]:
        return 0
    members = qapi["structs"][qtype]
    names = [m["name"] for m in members]
    assert set(value) <= set(names), (where, qtype, set(value) - set(names))
    assert {m["name"] for m in members if not m["optional"]} <= set(value), (where, qtype)
    assert list(value) == qdict_order([n for n in names if n in value]), (where, qtype, list(value))
    types = {m["name"]: m["type"] for m in members}
    return 1 + sum(check_order(v, types[k], qapi, f"{where}.{k}") for k, v in value.items())


def test_every_reply_prints_its_members_in_qdict_order_of_the_schema(corpus):
    checked = 0
    for case, folder, req, reply in exchanges(corpus):
        qapi = load(folder, "qapi")
        env = qapi["envelope"]
        if "error" in reply:
            inner = reply[env["error"]]
            assert list(inner) == qdict_order([env["class"], env["desc"]]), (case, req)
            assert list(reply) == qdict_order([env["error"]] + ([env["id"]] if env["id"] in reply else []))
            continue
        assert list(reply) == qdict_order([env["return"]] + ([env["id"]] if env["id"] in reply else []))
        if req["execute"] in qapi["commands"]:
            checked += check_order(reply[env["return"]], struct_of(qapi, req["execute"]), qapi,
                                   f"{case} {req['execute']}")
    assert checked

"""A layout derived from a QEMU core's own structures (``qemu_core/derive.py``): on every recorded
core it agrees with the hand-made profile on every field the reader uses, with the core's own
release's profile hidden (leave-one-out) and with a template whose offsets are wrong; the reader
falls back to it when no shipped profile passes its checks, and reads the same state."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vdecode.profiles
from tests.conftest import NO_CAPTURES, REPO, Capture, capture_folders
from vdecode.cli import cli
from vdecode.profiles import load_profile
from vdecode.sources.elf_dump import read_elf
from vdecode.sources.files import FileView
from vdecode.sources.qemu_core import (QemuLayout, _writable, device_names_table, load_layout,
                                       read_qemu_core)
from vdecode.sources.qemu_core.derive import (ANCHORED, CHECKED, READER_FIELDS, compare_layouts,
                                              derive_layout)
from vdecode.sources.qemu_core.process import find_qemu_binary, read_mapped_files
from vdecode.space.qemu_core import host_space

# other recordings with QEMU's heap in their cores (the recorder's output folders: case.json +
# qemu.core.zst) beside conftest's capture folders (x86_64 and the other targets'): QEMU 10.0.2
# runs in ../shared/captures-10.0, or the folders named in VDECODE_DERIVE_CAPTURES
# (os.pathsep-separated)
_MORE = [REPO.parent / "shared" / "captures-10.0",
         *(Path(p) for p in os.environ.get("VDECODE_DERIVE_CAPTURES", "").split(os.pathsep) if p)]


def _cores() -> list[tuple[str, Path]]:
    out = [(f"{p.parent.name}/{n}", p) for n, p in capture_folders().items()]
    for root in _MORE:
        if root.is_dir():
            out += [(f"{root.name}/{p.name}", p) for p in sorted(root.iterdir())
                    if (p / "case.json").exists() and (p / "qemu.core.zst").exists()]
    return list(dict(out).items())        # a folder named twice: once


CORES = _cores()


@pytest.fixture(scope="module", params=[c for c, _ in CORES] or [None])
def core(request, tmp_path_factory):
    if request.param is None:
        pytest.skip(NO_CAPTURES)
    path = dict(CORES)[request.param]
    # conftest's cases are decompressed once per session; other recordings into this module's
    # own folder, removed after it (a core is 0.6 GB, and nothing is left in the system temp)
    shared = request.getfixturevalue("captures") if path.name in capture_folders() else {}
    own_cache = None
    if path.name in shared and shared[path.name].folder == path:
        cap = shared[path.name]
    else:
        own_cache = tmp_path_factory.mktemp("cores")
        cap = Capture(path, own_cache)
    if not cap.has_dump("qemu-core"):
        pytest.skip(f"{cap.name} has no QEMU core")
    view = FileView(cap.dump("qemu-core"))
    elf = read_elf(view)
    mem = host_space(view, elf)
    own = read_qemu_core(view, elf, mem, load_layout("x86_64"))      # the hand-made profile's read
    yield view, elf, mem, own
    view.close()
    if own_cache is not None:
        shutil.rmtree(own_cache, ignore_errors=True)


def _derive(view, elf, mem, template: QemuLayout) -> QemuLayout:
    files = read_mapped_files(view, elf)
    binary, base, end = find_qemu_binary(mem, files)
    runs = [(f.start, f.end - f.start) for f in files
            if f.path == binary and mem.is_present(f.start, f.end - f.start)]
    return derive_layout(mem, _writable(elf), (base, end), runs, template,
                         device_names_table(template))


def _shipped(facts) -> QemuLayout:
    return QemuLayout(json.loads(json.dumps(load_profile(
        facts.info["profile"].split("qemu-")[1].split("/")[0]).table("layout-x86_64"))),
        facts.info["profile"])


@pytest.mark.parametrize("other", ["7.2", "10.0"])
def test_derivation_agrees_with_the_hand_made_profile(core, other):
    # derived with each shipped profile as template, its own release's hidden or not: every field
    # a core value pins is the hand-made profile's; the only differences are where the core holds
    # nothing to check (vhost structs of a core without a started vhost device)
    view, elf, mem, own = core
    shipped = _shipped(own)
    template = load_layout("x86_64", other)
    derived = _derive(view, elf, mem, template)
    cmp = compare_layouts(derived, shipped)
    assert cmp["differ"] == []
    if template.source == shipped.source:          # its own release's profile as template
        assert cmp["unchecked"] == []
        assert len(cmp["agree"]) >= sum(len(v) for k, v in READER_FIELDS.items()
                                        if k in shipped.offsets) - 2
    assert all(x.startswith("vhost_virtqueue.") for x in cmp["unchecked"]), cmp["unchecked"]
    assert not any(d.vhost_started for d in own.state.devices)
    ev = derived.data["derived"]["fields"]
    for key in ("VirtQueue.queue_index", "VirtQueue.vdev", "VirtIODevice.vq", "RAMBlock.idstr",
                "RAMBlock.mr", "MemoryRegion.ram_block", "DeviceState.canonical_path",
                "VirtIODevice.device_id"):
        assert ev[key]["confidence"] == ANCHORED, key
    for key in ("VirtIODevice.guest_features", "VirtIODevice.host_features",
                "VirtQueue.vring.num", "VirtQueue.used_idx", "VirtQueue.last_avail_idx",
                "VirtIODevice.device_endian"):
        if key == "VirtQueue.used_idx" and "guest RAM not in the core" in ev[key]["evidence"]:
            assert ev[key]["confidence"] == "template"      # dump-guest-core=off: nothing to check
            continue
        assert ev[key]["confidence"] == CHECKED, key


def test_template_with_wrong_offsets_is_corrected(core):
    # a template whose structs moved (as between releases): the anchors put them back
    view, elf, mem, own = core
    shipped = _shipped(own)
    data = json.loads(json.dumps(shipped.data))
    for struct, by in (("VirtIODevice", 16), ("RAMBlock", 8), ("MemoryRegion", 8)):
        for f in data["structs"][struct]["fields"]:
            f["offset"] += by
        data["structs"][struct]["size"] += by
    vq = data["structs"]["VirtQueue"]
    for f in vq["fields"]:
        if f["name"] in ("queue_index", "inuse", "vector", "handle_output", "vdev"):
            f["offset"] += 8
    vq["size"] += 8
    cmp = compare_layouts(_derive(view, elf, mem, QemuLayout(data, "moved.json")), shipped)
    assert cmp["differ"] == []


@pytest.fixture
def only(tmp_path, monkeypatch):
    """Hide every shipped profile but one (an install with the others removed)."""
    def keep(version: str) -> None:
        shutil.copytree(vdecode.profiles.formats_dir() / f"qemu-{version}",
                        tmp_path / "formats" / f"qemu-{version}")
        monkeypatch.setattr(vdecode.profiles, "formats_dir", lambda: tmp_path / "formats")
    return keep


def test_reader_falls_back_to_a_derived_layout_and_reads_the_same_state(core, only):
    view, elf, mem, own = core
    mine = _shipped(own).data["qemu"].rsplit(".", 1)[0]
    only("10.0" if mine == "7.2" else "7.2")
    facts = read_qemu_core(view, elf, mem, load_layout("x86_64"))
    assert facts.info["profile"].startswith("layout derived from the core (template formats/")
    assert facts.info["profile_reason"].startswith("no shipped profile passes its checks")
    assert facts.info["device_discovery"] == own.info["device_discovery"]
    assert facts.info["qemu_version_shown"].startswith(f"unknown (build-id {own.build_id}")
    assert facts.info["layout_derived"]["fields_by_confidence"]["anchored"] >= 10
    assert [b.idstr for b in facts.ram_blocks] == [b.idstr for b in own.ram_blocks]
    assert facts.guest_ram == own.guest_ram
    # every device and queue, field for field, as the hand-made profile reads them
    assert [d.canonical_path for d in facts.state.devices] == \
        [d.canonical_path for d in own.state.devices]
    for got, want in zip(facts.state.devices, own.state.devices):
        assert got.evolve(provenance={}) == want.evolve(provenance={})


def test_profile_command_prints_the_derived_layout(core, tmp_path):
    view, elf, mem, own = core
    out = tmp_path / "derived.json"
    res = CliRunner().invoke(cli, ["profile", view.name, "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["build_ids"] == [] and data["derived_from"].startswith("formats/qemu-")
    qi = next(f for f in data["structs"]["VirtQueue"]["fields"] if f["name"] == "queue_index")
    assert qi["confidence"] == "anchored" and "arrays of 1024 entries" in qi["evidence"]
    if own.build_id in _shipped(own).build_ids:      # the other targets' builds have none
        assert "(it lists the core's build-id):\n" in res.stderr
        assert " 0 differ, 0 differ unchecked" in res.stderr
    QemuLayout(data, "derived.json")                 # reads back as a layout


# --- a synthetic QEMU heap whose structs moved from every shipped profile (runs without ../shared)

def _moved_layout() -> QemuLayout:
    """10.0's layout with VirtIODevice 24 bytes on, a VirtQueue 8 bytes longer (its queue_index
    and what follows moved), RAMBlock's idstr and MemoryRegion's ram_block 8 bytes on: a build
    no shipped profile fits."""
    data = json.loads(json.dumps(load_profile("10.0").table("layout-x86_64")))
    s = data["structs"]

    def move(struct: str, by: int, first: str | None = None) -> None:
        names = [f["name"] for f in s[struct]["fields"]]
        start = names.index(first) if first else 0
        for f in s[struct]["fields"][start:]:
            f["offset"] += by
        s[struct]["size"] += by

    move("VirtIODevice", 24)
    move("VirtQueue", 8, "queue_index")
    move("RAMBlock", 8, "idstr")
    move("MemoryRegion", 8, "ram_block")
    return QemuLayout(data, "moved.json")


def test_derived_from_a_synthetic_heap_of_an_unknown_build(tmp_path):
    from vdecode.space.segmented import SegmentedSpace

    true = _moved_layout()
    B = 0x7F0000000000
    image = bytearray(0x80000)

    def put(struct: str, at: int, **values) -> None:
        fields = {f: 0 for f in true.offsets[struct]}
        fields.update(values)
        raw = true.structs[struct].build(fields)
        image[at - B:at - B + len(raw)] = raw

    def word(at: int, value: int) -> None:
        image[at - B:at - B + 8] = value.to_bytes(8, "little")

    def text(at: int, s: str) -> int:
        image[at - B:at - B + len(s) + 1] = s.encode() + b"\0"
        return at

    # the binary's data: virtio_device_names[] (names in its .rodata), the list heads
    names = {1: text(B + 0x800, "virtio-net"), 2: text(B + 0x810, "virtio-blk")}
    for i, p in names.items():
        word(B + 0x100 + 8 * i, p)
    list_head, ram_head = B + 0xF00, B + 0xF80
    # ram_list.blocks: one block, pc.ram, whose region points back at it
    rb, mr, guest = B + 0x1000, B + 0x1400, B + 0x60000
    put("RAMBlock", rb, mr=mr, host=guest, offset=0, used_length=0x10000, max_length=0x10000,
        idstr=b"pc.ram".ljust(256, b"\0"), **{"next.le_next": 0, "next.le_prev": ram_head})
    word(ram_head, rb)
    put("MemoryRegion", mr, ram_block=rb, name=text(B + 0x1700, "pc.ram"), size=0x10000,
        enabled=True, ram=True)
    # two devices on virtio_list, each with its VirtQueue[1024]
    devs, arrays = [B + 0x2000, B + 0x2400], [B + 0x4000, B + 0x4000 + 0x28800]
    nxt = true.off("VirtIODevice", "next.tqe_next")
    for k, (dev, arr, dev_id) in enumerate(zip(devs, arrays, (1, 2))):
        path = text(B + 0x1800 + 0x80 * k, f"/machine/peripheral-anon/device[{k}]/virtio-backend")
        put("DeviceState", dev, canonical_path=path, realized=True)
        fields = {f: 0 for f in true.offsets["VirtIODevice"]
                  if f not in true.offsets["DeviceState"]}
        fields.update(name=names[dev_id], status=0x0F, device_id=dev_id, vq=arr,
                      host_features=0x1_3000_0000 | 0x2F, guest_features=0x1_1000_0000 | 0x21,
                      vm_running=True, device_endian=1,
                      **{"next.tqe_next": devs[1] if k == 0 else 0,
                         "next.tqe_circ.tql_prev": list_head if k == 0 else devs[0] + nxt})
        raw = true.structs["VirtIODevice"].build({**{f: 0 for f in true.offsets["DeviceState"]},
                                                  **fields})
        at = true.sizes["DeviceState"]
        image[dev - B + at:dev - B + len(raw)] = raw[at:]
        q = np.zeros(1024, dtype=true.dtypes["VirtQueue"])
        q["queue_index"], q["vdev"] = np.arange(1024), dev
        for i in range(2):
            q[i]["vring.num"] = q[i]["vring.num_default"] = 256
            q[i]["vring.align"] = 4096
            q[i]["vring.desc"], q[i]["vring.avail"] = 0x10000 * (i + 1), 0x10000 * (i + 1) + 4096
            q[i]["vring.used"] = 0x10000 * (i + 1) + 8192
            q[i]["last_avail_idx"], q[i]["shadow_avail_idx"] = 7, 7
            q[i]["used_idx"], q[i]["inuse"], q[i]["signalled_used"] = 5, 2, 5
        image[arr - B:arr - B + q.nbytes] = q.tobytes()
    word(list_head, devs[0])
    word(list_head + 8, devs[1] + nxt)
    path = tmp_path / "heap.bin"
    path.write_bytes(bytes(image))
    with FileView(path) as view:
        mem = SegmentedSpace(view.name, view, [B], [len(image)], [0], [len(image)],
                             kind="host-virtual")
        template = load_layout("x86_64", "10.0")
        derived = derive_layout(mem, [(B, len(image))], (B, B + 0x1000), [(B, 0x1000)],
                                template, device_names_table(template))
    assert derived.data["device_discovery"] == "virtio_list"
    cmp = compare_layouts(derived, true)
    assert cmp["differ"] == []
    moved = ["VirtIODevice.vq", "VirtIODevice.device_id", "VirtIODevice.name",
             "VirtIODevice.guest_features", "VirtIODevice.device_endian", "VirtQueue.queue_index",
             "VirtQueue.vdev", "VirtQueue.inuse", "VirtQueue.size", "RAMBlock.idstr",
             "RAMBlock.next.le_next", "MemoryRegion.ram_block", "MemoryRegion.name"]
    assert set(moved) <= set(cmp["agree"])
    ev = derived.data["derived"]["fields"]
    assert ev["VirtIODevice.device_id"]["evidence"].startswith(
        f"the u16 giving all 2 devices' name pointers one slot each of virtio_device_names[] "
        f"at {B + 0x100:#x}")
    # the template alone reads none of it
    assert compare_layouts(_with_evidence_of(derived, template), true)["differ"]


def _with_evidence_of(derived: QemuLayout, template: QemuLayout) -> QemuLayout:
    data = json.loads(json.dumps(template.data))
    data["derived"] = derived.data["derived"]
    return QemuLayout(data, "template")


def test_log_replies_confirm_a_derived_layout(core):
    from vdecode.reconstruct.state.session import confirm_derived

    _, _, _, own = core
    state = own.state
    n = len(state.devices)
    said = confirm_derived(state, state)
    assert said.startswith(f"layout derived from the core: the log's replies agree on "
                           f"host-features {n}/{n}, device-endian {n}/{n}, num-vqs {n}/{n}")
    assert "wrong" not in said
    first = state.devices[0]
    hf = first.host_features or 0
    flipped = first.evolve(host_features=hf & ~(hf & -hf))     # a bit it offers, gone
    moved = dataclasses.replace(state, devices=[flipped, *state.devices[1:]])
    assert confirm_derived(moved, state).endswith(
        "(where they differ, the driver may have reset since the log, or the derived offset of "
        "host-features is wrong)")


@pytest.mark.parametrize("mode", ["qemu-core+none", "elf+early"])
def test_leave_one_out_replies(captures, tmp_path, mode):
    # an install without the capture's own profile (7.2): QEMU's replies from the core alone and
    # from a guest dump with an early log. The state read from the core is exact (above); what
    # differs is in the other release's tables (feature labels, error texts), kept >= 98 %
    from tests.reconstruct.fidelity import score_args, with_formats

    cap = captures["basic"]
    shutil.copytree(vdecode.profiles.formats_dir() / "qemu-10.0", tmp_path / "f" / "qemu-10.0")
    dump, log = mode.split("+")
    args = [str(cap.dump(dump))] + ([] if log == "none" else ["--log", str(cap.log(log))])
    s = score_args(cap.truth, args, command=with_formats(tmp_path / "f"), timeout=900)
    assert s["fields"] >= 0.98 * s["total"], (s["fields"], s["total"], s["stderr"][-2000:])

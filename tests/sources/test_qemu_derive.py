"""A layout derived from a QEMU core's own structures (``qemu_core/derive.py``): on every recorded
core it agrees with the hand-made profile on every field the reader uses, with the core's own
release's profile hidden (leave-one-out) and with a template whose offsets are wrong; the reader
falls back to it when no shipped profile passes its checks, and reads the same state."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import vdecode.profiles
from tests.conftest import NO_CAPTURES, REPO, Capture, capture_names
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

# recordings of other releases with QEMU's heap in their cores (the recorder's output folders:
# case.json + qemu.core.zst), e.g. QEMU 10.0.2 runs: ../shared/captures-10.0, or the folders
# named in VDECODE_DERIVE_CAPTURES (os.pathsep-separated)
_MORE = [REPO.parent / "shared" / "captures-10.0",
         *(Path(p) for p in os.environ.get("VDECODE_DERIVE_CAPTURES", "").split(os.pathsep) if p)]


def _cores() -> list[tuple[str, Path]]:
    from tests.conftest import CAPTURES

    out = [(f"7.2/{n}", CAPTURES / n) for n in capture_names()]
    for root in _MORE:
        if root.is_dir():
            out += [(f"{root.name}/{p.name}", p) for p in sorted(root.iterdir())
                    if (p / "case.json").exists() and (p / "qemu.core.zst").exists()]
    return out


CORES = _cores()


@pytest.fixture(scope="module", params=[c for c, _ in CORES] or [None])
def core(request):
    if request.param is None:
        pytest.skip(NO_CAPTURES)
    cap = Capture(dict(CORES)[request.param])
    cap.name = request.param.replace("/", "-")    # its own decompression cache (names repeat)
    if not cap.has_dump("qemu-core"):
        pytest.skip(f"{cap.name} has no QEMU core")
    view = FileView(cap.dump("qemu-core"))
    elf = read_elf(view)
    mem = host_space(view, elf)
    own = read_qemu_core(view, elf, mem, load_layout("x86_64"))      # the hand-made profile's read
    yield view, elf, mem, own
    view.close()


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


def test_derived_with_own_template_agrees_on_every_field(core):
    view, elf, mem, own = core
    shipped = _shipped(own)
    cmp = compare_layouts(_derive(view, elf, mem, shipped), shipped)
    assert cmp["differ"] == [] and cmp["unchecked"] == []
    assert len(cmp["agree"]) >= sum(len(v) for k, v in READER_FIELDS.items()
                                    if k in shipped.offsets) - 2


@pytest.mark.parametrize("other", ["7.2", "10.0"])
def test_leave_one_out_derivation_agrees_with_the_hidden_profile(core, other):
    # derived with another release's profile as template: every field a core value pins is the
    # hidden profile's; the only differences are where the core holds nothing to check (vhost
    # structs of a core without a started vhost device)
    view, elf, mem, own = core
    shipped = _shipped(own)
    template = load_layout("x86_64", other)
    derived = _derive(view, elf, mem, template)
    cmp = compare_layouts(derived, shipped)
    assert cmp["differ"] == []
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
    assert "(it lists the core's build-id):\n" in res.stderr
    assert " 0 differ, 0 differ unchecked" in res.stderr
    QemuLayout(data, "derived.json")                 # reads back as a layout

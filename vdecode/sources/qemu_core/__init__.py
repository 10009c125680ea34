"""
QEMU process cores: QEMU's own structs, found by invariants
-----------------------------------------------------------
Reads a core of ``qemu-system-*`` (gdb's ``gcore``, the kernel, systemd-coredump) through its host-virtual
memory and returns facts: the virtio devices as :class:`~vdecode.sources.qemu_state.QemuVirtioState`
(``VirtIODevice``, ``VirtQueue``, ``vhost_dev``; QEMU v7.2.0 ``include/hw/virtio/virtio.h``,
``hw/virtio/virtio.c``, ``include/hw/virtio/vhost.h``), the ``RAMBlock`` list
(``include/exec/ramblock.h``) and where guest RAM sits in the system address space
(``MemoryRegion`` aliases such as ``ram-below-4g``; ``hw/i386/pc.c`` ``pc_memory_init``).

Debian's binary is stripped, so nothing is found by symbol. Offsets come from a layout profile
(``formats/qemu-<ver>/layout-<arch>.json``, keyed by the binary's GNU build-id) and every struct is
found by what must hold in it:

- ``VirtQueue vq[VIRTIO_QUEUE_MAX]``: entry ``i`` has ``queue_index == i`` and every entry's
  ``vdev`` is the same device, whose ``vq`` points back at the array (``virtio_init``);
- the device's ``name`` and ``canonical_path`` are C strings, the path starts ``/machine/``;
- ``virtio_list`` (``QTAILQ``): each ``next.tqe_circ.tql_prev`` points at the previous element's
  link or at the list head, and walking from the head visits each device once;
- a ``RAMBlock`` named for main RAM or firmware (``pc.ram``, ``mach-virt.ram``, ``s390.ram``,
  ``*.rom``) has ``mr->ram_block`` pointing back at it, and its ``next`` links lead through the
  whole ``ram_list.blocks``.

Every pointer is checked against the core's mappings before it is followed. This module never
builds address spaces: the caller passes the host-virtual memory (``vdecode.space.qemu_core``).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from vdecode.errors import CorruptInput, UnsupportedInput, VdecodeError
from vdecode.frozen import record
from vdecode.profiles import load_profile
from vdecode.sources.elf_dump import ElfFacts
from vdecode.sources.files import FileView
from vdecode.sources.qemu_core.devices import (check_device_names, count_index_runs, find_vhost_dev,
                                               find_virtqueue_arrays, is_virtio_device, read_device,
                                               walk_virtio_list)
from vdecode.sources.qemu_core.derive import TEMPLATE, derive_layout, derived_summary
from vdecode.profiles import decide_release, made_from, minor_of, release_within
from vdecode.sources.qemu_core.layout import QemuLayout, choose_layout, load_layout
from vdecode.sources.qemu_core.qom import find_qom_root, walk_qom_tree
from vdecode.sources.qemu_core.memory import PF_W, CoreReader, HostMemory, profile_mismatch
from vdecode.sources.qemu_core.process import (MappedFile, find_qemu_binary, find_qemu_version,
                                               read_build_id, read_mapped_files)
from vdecode.sources.qemu_core.ram import GuestRamRun, RamBlockFacts, find_ram_blocks, map_guest_ram
from vdecode.sources.qemu_state import QemuVirtioState

__all__ = ("CoreReader", "derive_core_layout", "GuestRamRun", "HostMemory", "MappedFile", "QemuCoreFacts", "QemuLayout",
           "RamBlockFacts", "device_names_table", "find_virtqueue_arrays", "find_vhost_dev",
           "load_layout", "read_mapped_files", "read_qemu_core")


@record
class QemuCoreFacts:
    state: QemuVirtioState
    binary: str
    build_id: str | None
    ram_blocks: list[RamBlockFacts] = field(default_factory=list)
    guest_ram: list[GuestRamRun] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: where QEMU kept each device: ``(QOM path, VirtIODevice address, its VirtQueue array's
    #: address, sizeof(VirtQueue))``, in list order; a trace's ``vdev``/``vq`` pointers are these
    queue_arrays: tuple[tuple[str, int, int, int], ...] = ()





def device_names_table(layout: QemuLayout) -> dict[int, str]:
    """``device_id`` → the name QEMU's ``virtio_device_names[]`` gives it: the profile's
    ``devices.json`` table for the layout's release, else the layout's own copy."""
    from vdecode.profiles import load_profile

    try:
        release = minor_of(str(layout.data.get("qemu", ""))) or None
        names = load_profile(release).table("devices").get("names", {})
    except UnsupportedInput:
        return dict(layout.device_names)
    return {int(k): v for k, v in names.items()} or dict(layout.device_names)


def read_qemu_core(view: FileView, elf: ElfFacts, mem: HostMemory, layout: QemuLayout, *,
                   check_build_id: bool | str = True) -> QemuCoreFacts:
    """QEMU's virtio state, RAM blocks and guest RAM map from a process core.

    :param mem: the core's host-virtual memory (by ``p_vaddr``).
    :param layout: the layout profile; a core whose binary's build-id it does not list is read
        with it all the same (the invariants decide) and a warning is recorded in ``info``,
        unless ``check_build_id == "strict"``.
    :raises UnsupportedInput: not a QEMU core (or, when strict, a build the profile is not for).
    :raises CorruptInput: an invariant of the profile fails on this core (the message names the
        profile and the check).
    :raises MissingData: a struct the answer needs is not in the core.
    """
    files = read_mapped_files(view, elf)
    binary, base, end = find_qemu_binary(mem, files)
    build_id = read_build_id(CoreReader(mem, layout, device_names_table(layout)), base)
    bin_runs = [(f.start, f.end - f.start) for f in files
                if f.path == binary and mem.is_present(f.start, f.end - f.start)]
    core_version, core_package = find_qemu_version(mem, bin_runs)
    release = decide_release(core_version)      # the one decision of the run's profile
    if not getattr(layout, "auto", False):
        return _read_with(view, elf, mem, layout, check_build_id, binary, (base, end), build_id,
                          bin_runs, core_version, core_package, f"the layout given: {layout.source}",
                          release)
    candidates, why, own = choose_layout(layout.arch, build_id, core_version, release)
    failed: list[VdecodeError] = []
    for lay in candidates:
        try:
            return _read_with(view, elf, mem, lay, check_build_id, binary, (base, end), build_id,
                              bin_runs, core_version, core_package,
                              why if not failed else f"{why}: {lay.source} (the ones before "
                                                     f"failed their checks)", release)
        except CorruptInput as err:
            if own:
                raise           # the build-id picked this profile: its failure is the answer
            failed.append(err)
    # no shipped profile fits this build: derive its layout from the core with the field order
    # of each profile, and read with it as with a shipped one. Every template is tried and the
    # derivation the core supports best is kept (most fields anchored or checked on this core):
    # the nearest release by number is not always the nearest layout (10.0 is laid out as 7.2,
    # 10.2 widened the feature words), and a core with few devices may let a wrong template's
    # placed-by-template fields (the feature words) pass every check
    best: tuple[int, QemuCoreFacts] | None = None     # the first of equals: the better-ranked
    for lay in candidates:
        try:
            derived = derive_layout(mem, _writable(elf), (base, end), bin_runs, lay,
                                    device_names_table(lay))
            facts = _read_with(view, elf, mem, derived, check_build_id, binary, (base, end),
                               build_id, bin_runs, core_version, core_package,
                               f"no shipped profile passes its checks on this core "
                               f"({failed[0].reason if failed else 'none shipped'}): layout "
                               f"derived from the core's own structures", release)
        except VdecodeError as err:
            # the shipped profiles' failures say more than a derivation that found nothing
            failed.append(err)
            continue
        if best is None or _support(derived) > best[0]:
            best = (_support(derived), facts)
    if best is not None:
        return best[1]
    raise failed[0]


def derive_core_layout(view: FileView, elf: ElfFacts, mem: HostMemory
                       ) -> tuple[QemuLayout, QemuLayout | None]:
    """The layout derived from a QEMU core (with the first shipped layout that works as
    template), and the shipped profile that lists the core's build-id, if any, to check it by.

    :raises UnsupportedInput: not a QEMU core.
    :raises CorruptInput: no layout could be derived (the first failure's reason).
    """
    files = read_mapped_files(view, elf)
    binary, base, end = find_qemu_binary(mem, files)
    probe = load_layout("x86_64")
    build_id = read_build_id(CoreReader(mem, probe, device_names_table(probe)), base)
    bin_runs = [(f.start, f.end - f.start) for f in files
                if f.path == binary and mem.is_present(f.start, f.end - f.start)]
    version, _ = find_qemu_version(mem, bin_runs)
    candidates, _, own = choose_layout(probe.arch, build_id, version, decide_release(version))
    failed: list[CorruptInput] = []
    best: QemuLayout | None = None
    for lay in candidates:
        try:
            derived = derive_layout(mem, _writable(elf), (base, end), bin_runs, lay,
                                    device_names_table(lay))
        except CorruptInput as err:
            failed.append(err)
            continue
        if own:             # derived with the build's own profile as template, to check it by
            return derived, candidates[0]
        # else the one the reader would use: the derivation the core supports best
        if best is None or _support(derived) > _support(best):
            best = derived
    if best is not None:
        return best, None
    if not failed:
        raise UnsupportedInput(view.name, "no shipped layout to derive from")
    raise failed[0]


def _support(derived: QemuLayout) -> int:
    """How many of a derived layout's fields the core itself found or checked (not placed by the
    template alone): of two derivations that pass, the core supports the one with more."""
    return sum(1 for f in derived.data["derived"]["fields"].values() if f["confidence"] != TEMPLATE)


# what the way a build lists its devices says of its release (qmp_x_query_virtio: 8.2 dropped
# virtio_list for the QOM tree)
_LISTED_BY = {"qom-tree": "the QOM tree: QEMU 8.2 or later",
              "virtio_list": "virtio_list: QEMU 8.1 or earlier"}
# (lowest, highest) release each fact a derived layout shows allows: the device list (8.2 walks
# the QOM tree) and VirtIODevice's feature words (10.2's VIRTIO_DECLARE_FEATURES made them
# 128-bit), the latter only when the core checked them, not when the template placed them
_DISCOVERY_BOUNDS = {"qom-tree": ((8, 2), None), "virtio_list": (None, (8, 1))}
_FEATURE_BYTES_BOUNDS = {8: (None, (10, 1)), 16: ((10, 2), None)}


def _release_bounds(layout: QemuLayout, discovery: str
                    ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The release range a derived layout's core allows (``(low, high)``, either ``None``)."""
    facts = [_DISCOVERY_BOUNDS.get(discovery, (None, None))]
    ev = layout.data["derived"]["fields"].get("VirtIODevice.host_features", {})
    if ev.get("confidence") not in (None, TEMPLATE):
        size = next((f["size"] for f in layout.data["structs"]["VirtIODevice"]["fields"]
                     if f["name"] == "host_features"), None)
        facts.append(_FEATURE_BYTES_BOUNDS.get(size, (None, None)))
    lows = [lo for lo, _ in facts if lo]
    highs = [hi for _, hi in facts if hi]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _bounds_text(bounds: tuple[tuple[int, int] | None, tuple[int, int] | None]) -> str:
    lo, hi = (".".join(map(str, b)) if b else None for b in bounds)
    return (f"QEMU {lo} to {hi}" if lo and hi else f"QEMU {lo} or later" if lo
            else f"QEMU {hi} or earlier" if hi else "no bound")


def _writable(elf: ElfFacts) -> list[tuple[int, int]]:
    """The core's writable mappings that it holds in full (``(hva, size)``)."""
    loads = elf.loads
    return [(int(a), int(n)) for a, n, fs, fl in zip(loads["p_vaddr"], loads["p_memsz"],
                                                    loads["p_filesz"], loads["p_flags"])
            if fl & PF_W and fs == n and n > 0]


def _read_with(view: FileView, elf: ElfFacts, mem: HostMemory, layout: QemuLayout,
               check_build_id: bool | str, binary: str, binary_span: tuple[int, int],
               build_id: str | None, bin_runs: list[tuple[int, int]],
               version: tuple[int, int, int] | None, package: str | None,
               profile_reason: str, release: str | None = None) -> QemuCoreFacts:
    """:func:`read_qemu_core` with one layout profile (``profile_reason``: why this one;
    ``release``: the profile release decided from the core's version string, if it has one)."""
    rd = CoreReader(mem, layout, device_names_table(layout))
    warnings = []
    # another build of the profile's release that the profile knows by its build-id (its
    # version and the strings its executable holds: layout "builds")
    known = layout.data.get("builds", {}).get(build_id or "")
    if layout.build_ids and build_id not in layout.build_ids and not known:
        # Another build of the same QEMU release (a distro rebuild, a newer stable update) often
        # keeps these layouts: try the profile, and let the invariants below decide.
        msg = (f"{layout.label} was made for build-id {', '.join(layout.build_ids)}; {binary} has "
               f"{build_id or 'no build-id'}: using it because QEMU's own structures pass its "
               f"checks")
        if check_build_id == "strict":
            raise UnsupportedInput(view.name, f"{layout.label} does not fit this core: check "
                                              f"'build-id' failed: {binary} has build-id "
                                              f"{build_id or 'unknown'}, the profile is for "
                                              f"{', '.join(layout.build_ids)}")
        warnings.append(msg)
    in_core = getattr(mem, "in_core", None)          # HostSpace: the binary may give .rodata
    version_from = "core" if in_core is None or all(in_core(a, n) for a, n in bin_runs) \
        else "binary file"
    if version is None and known:
        version = tuple(int(x) for x in known["qemu"].split("."))[:3]  # type: ignore[assignment]
        package = known.get("package")
        version_from = f"profile's known builds (build-id {build_id})"
    if version is None and "qemu" in layout.data:
        # .rodata is not in the core; the build-id pins the release the profile names (another
        # build: the profile's release is the best guess, and the warning says so)
        version = tuple(int(x) for x in layout.data["qemu"].split("."))[:3]  # type: ignore[assignment]
        own = build_id in layout.build_ids
        package = layout.data.get("package") if own else None
        version_from = "profile" if own else (
            f"layout of the {layout.data['qemu']} profile, which fits its structures; its build-id "
            f"{build_id or '(none)'} is no profile's, so the micro release is unknown")
        if "derived" in layout.data:
            version_from = (f"tables of the template profile, "
                            f"{layout.data['derived']['template']}: the release is unknown")

    loads = elf.loads
    writable = _writable(elf)
    blocks = find_ram_blocks(rd, writable, binary_span)
    guest_hva = [(b.host, b.max_length) for b in blocks]
    heap = [(a, n) for a, n in writable
            if not any(h <= a < h + m for h, m in guest_hva)]
    guest_ram = map_guest_ram(rd, blocks, heap) if blocks else []

    arrays = find_virtqueue_arrays(mem, layout, heap)
    # No array: either no virtio device, or a profile that cannot see them. The RAMBlock list
    # read with this profile, and nothing in QEMU's memory looks like a VirtQueue array at any
    # field offset, make it the first.
    if not arrays and (not blocks or count_index_runs(mem, layout.sizes["VirtQueue"], heap)):
        raise profile_mismatch(layout, mem, "VirtQueue arrays exist",
                        "no VirtQueue[VIRTIO_QUEUE_MAX] array (queue_index 0,1,2 with one vdev) "
                        "in the core's writable memory")
    devices = []
    array_of = {}
    for arr, vdev in arrays:
        if rd.valid(vdev, layout.sizes["VirtIODevice"]):
            array_of.setdefault(vdev, arr)
    if arrays and not array_of:
        raise profile_mismatch(layout, mem, "VirtQueue.vdev points at a device",
                        f"{len(arrays)} arrays, none with a readable vdev")
    # a derived layout says how its build lists devices; a shipped one's release's table does
    discovery = layout.data.get("device_discovery") or load_profile(
        layout.release or str(layout.data.get("qemu", "")) or None).table("devices").get(
        "device_discovery", "virtio_list")
    if not array_of:
        # Every realized VirtIODevice owns a VirtQueue[VIRTIO_QUEUE_MAX] array on the heap
        # (virtio_init). The profile read QEMU's RAMBlock list, so it fits; with the heap in the
        # core and no array in it, the VM has no virtio device: QEMU answers x-query-virtio with
        # [] (7.2) or its "No virtio devices found" error (8.2+).
        head, order = None, []
        partial = [(int(a), int(n)) for a, n, fs, fl in zip(loads["p_vaddr"], loads["p_memsz"],
                                                           loads["p_filesz"], loads["p_flags"])
                   if fl & PF_W and fs != n and n > 0]
        if partial:
            warnings.append(f"no VirtQueue array in the core's writable memory, but "
                            f"{len(partial)} writable mapping(s) are not in the core (first at "
                            f"{partial[0][0]:#x}): a virtio device could be there, unseen")
    elif discovery == "qom-tree":
        # QEMU 8.2+ qmp_x_query_virtio: the realized VirtIODevices of the composition tree, in
        # object_child_foreach_recursive order (see qom.py)
        head = find_qom_root(rd, next(iter(array_of)))
        order = [o for o in walk_qom_tree(rd, head)
                 if (o in array_of or is_virtio_device(rd, o))
                 and rd.struct("DeviceState", o, f"DeviceState at {o:#x}")["realized"]]
    else:
        head, order = walk_virtio_list(rd, next(iter(array_of)), binary_span)
    raws = []
    arrays_at = []
    for vdev in order:
        dev, raw = read_device(rd, vdev)
        raws.append(raw)
        if vdev in array_of and raw["vq"] != array_of[vdev]:
            raise profile_mismatch(layout, mem, "VirtIODevice.vq == its VirtQueue array",
                            f"{dev.canonical_path}: vq {raw['vq']:#x}, array at {array_of[vdev]:#x}",
                            rd.file_offset(vdev))
        if dev.vhost_started:
            dev = dev.evolve(vhost_dev=find_vhost_dev(rd, vdev, heap))
        devices.append(dev)
        arrays_at.append((dev.canonical_path, vdev, int(raw["vq"]), layout.sizes["VirtQueue"]))
    bounds = None
    if "derived" in layout.data and version_from.startswith("tables of the template"):
        # no version string and no known build-id: the release is bounded by what the core's own
        # structures show, and answered by the profile made from the release nearest the bounds
        # (not the template's, which only gave the field order)
        bounds = _release_bounds(layout, discovery)
        near = release_within(*bounds)
        if near:
            release = near[0]
            version_from = (f"tables of the {near[0]} profile, made from QEMU {near[1]}, the "
                            f"nearest to what the core's structures show "
                            f"({_bounds_text(bounds)}): the release is unknown")
    if release is None and version is not None:      # the release the layout's build-id pins
        release = decide_release(version)
    state = QemuVirtioState(devices=devices, qemu_version=version, package=package,
                            source="core", release=release,
                            labels=tuple(tuple(x) for x in (known or {}).get("labels", ())),
                            labels_from=f"{layout.source} (builds: {build_id})" if known else None)
    if any(mem.is_present(a, 8) for a, _ in bin_runs):
        names_at = check_device_names(rd, raws, bin_runs)
    else:
        names_at = None
        if raws:
            rd.skip("VirtIODevice.name == virtio_device_names[device_id]",
                    f"none of {binary}'s data is in the core")
    info = {"binary": binary, "qemu_version_from": version_from if version else None,
            # what info prints: a release no input names exactly is not given a micro number
            **({"qemu_version_shown": _releases_shown(layout.data["qemu"])}
               if version and version_from.startswith("layout of") else {}),
            **({"qemu_version_shown": f"unknown (build-id {build_id or 'none'}, no profile: layout "
                                      f"derived; its devices are on {_LISTED_BY[discovery]}"
                                      + (f"; its structures: {_bounds_text(bounds)}" if bounds
                                         else "") + ")"}
               if "derived" in layout.data else {}),
            "virtio_device_names": names_at, "build_id": build_id, "profile": layout.source,
            **({"qom_root": None if head is None else f"{head:#x}"} if discovery == "qom-tree"
               else {"virtio_list": head}),
            "device_discovery": discovery, "profile_reason": profile_reason, "virtqueue_arrays": len(arrays),
            "devices_not_on_list": sorted(v for v in array_of if v not in order),
            "warnings": warnings, "checks_skipped": list(rd.skipped),
            **({"layout_derived": derived_summary(layout)} if "derived" in layout.data else {})}
    return QemuCoreFacts(state=state, binary=binary, build_id=build_id, ram_blocks=blocks,
                         guest_ram=guest_ram, info=info, queue_arrays=tuple(arrays_at))


def _releases_shown(profile_release: str) -> str:
    """What info names for a core whose build no profile lists, read with the layout of the
    profile of ``profile_release``: every minor release that profile was made from (its
    ``made_from.json``): the 11.1 profile's structures are 10.2.2's source and 11.1.3's, so such
    a core is "10.2.x or 11.1.x", never a release the input does not say."""
    minors = []
    for r in made_from(minor_of(profile_release)):
        m = minor_of(r) + ".x"
        if m not in minors:
            minors.append(m)
    return " or ".join(minors)

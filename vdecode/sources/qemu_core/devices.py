"""Virtio devices in a QEMU core: ``VirtQueue`` arrays, ``VirtIODevice``, ``virtio_list``, the
device names and ``vhost_dev`` (QEMU v7.2.0 ``include/hw/virtio/virtio.h``, ``hw/virtio/virtio.c``,
``include/hw/virtio/vhost.h``)."""

from __future__ import annotations

import dataclasses

from typing import Any

import numpy as np

from vdecode.errors import CorruptInput, MissingData, UnsupportedInput
from vdecode.sources.qemu_core.layout import QemuLayout
from vdecode.sources.qemu_core.memory import (MAX_DEVICES, CoreReader, HostMemory, find_pointers,
                                              profile_mismatch, scan_runs)
from vdecode.sources.qemu_state import VhostDev, VhostVirtqueue, VirtIODeviceState, VirtQueueState

__all__ = ("find_virtqueue_arrays", "read_virtqueues", "read_device", "is_virtio_device",
           "walk_virtio_list",
           "check_device_names", "find_vhost_dev")


def find_virtqueue_arrays(mem: HostMemory, layout: QemuLayout,
                          runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(array hva, vdev hva)`` of every ``VirtQueue[VIRTIO_QUEUE_MAX]`` in ``runs``.

    A candidate has ``queue_index`` 0, 1, 2 in its first three entries and one ``vdev`` in all
    three; :func:`read_virtqueues` then checks all entries.
    """
    size = layout.sizes["VirtQueue"]
    qi, vd = layout.off("VirtQueue", "queue_index"), layout.off("VirtQueue", "vdev")
    if size % 8 or qi % 2 or vd % 8:
        raise UnsupportedInput(layout.source, "VirtQueue scan needs 8-byte stride and aligned fields")
    found = []
    for start, mv in scan_runs(mem, runs):
        n8 = len(mv) // 8
        if n8 * 8 < 3 * size:
            continue
        w64 = np.frombuffer(mv[:n8 * 8], dtype="<u8")
        w16 = np.frombuffer(mv[:n8 * 8], dtype="<u2")
        nb = n8 - 3 * size // 8                     # candidate bases (in 8-byte words)
        s16, s64 = size // 2, size // 8
        second = w16[s16 + qi // 2::4][:nb]
        cand = np.flatnonzero(second == 1)
        if not cand.size:
            continue
        cand = cand[(w16[cand * 4 + qi // 2] == 0) & (w16[cand * 4 + 2 * s16 + qi // 2] == 2)]
        v0 = w64[cand + vd // 8]
        cand = cand[(v0 != 0) & (v0 == w64[cand + s64 + vd // 8])
                    & (v0 == w64[cand + 2 * s64 + vd // 8])]
        found += [(start + int(k) * 8, int(w64[int(k) + vd // 8])) for k in cand]
    return found



def count_index_runs(mem: HostMemory, stride: int, runs: list[tuple[int, int]], n: int = 8) -> int:
    """Places in ``runs`` where a u16 counts ``0, 1, ..., n-1`` at ``stride`` bytes apart, at
    any offset: what a ``VirtQueue`` array looks like whatever its field offsets are.

    Tells a VM without virtio devices (none anywhere) from a profile whose ``queue_index`` or
    ``vdev`` offset is wrong (the arrays are there, the profile cannot see them).
    """
    s16 = stride // 2
    found = 0
    for _, mv in scan_runs(mem, runs):
        n2 = len(mv) // 2
        if stride % 2 or n2 <= n * s16:
            continue
        w16 = np.frombuffer(mv[:n2 * 2], dtype="<u2")
        i = np.flatnonzero(w16[s16:n2 - (n - 2) * s16] == 1)    # element 1 at i + s16
        ok = w16[i] == 0
        for k in range(2, n):
            ok &= w16[i + k * s16] == k
        found += int(np.count_nonzero(ok))
    return found


def read_virtqueues(rd: CoreReader, vq_hva: int, vdev_hva: int) -> np.ndarray:
    """The device's ``VirtQueue[VIRTIO_QUEUE_MAX]`` as one structured array, checked."""
    lay = rd.layout
    n = lay.queue_max
    dt = lay.dtypes["VirtQueue"]
    raw = rd.read(vq_hva, n * dt.itemsize, f"VirtQueue array of VirtIODevice {vdev_hva:#x}")
    arr = np.frombuffer(raw, dtype=dt)
    bad = np.flatnonzero(arr["queue_index"] != np.arange(n))
    if bad.size:
        i = int(bad[0])
        raise profile_mismatch(lay, rd.mem, "VirtQueue[i].queue_index == i",
                        f"vq[{i}] of VirtIODevice {vdev_hva:#x} at {vq_hva:#x} has queue_index "
                        f"{int(arr['queue_index'][i])}", rd.file_offset(vq_hva + i * dt.itemsize))
    bad = np.flatnonzero(arr["vdev"] != vdev_hva)
    if bad.size:
        i = int(bad[0])
        raise profile_mismatch(lay, rd.mem, "VirtQueue[i].vdev == device",
                        f"vq[{i}] at {vq_hva + i * dt.itemsize:#x} points at {int(arr['vdev'][i]):#x}, "
                        f"not VirtIODevice {vdev_hva:#x}", rd.file_offset(vq_hva + i * dt.itemsize))
    return arr


def read_device(rd: CoreReader, vdev_hva: int) -> tuple[VirtIODeviceState, Any]:
    """One ``VirtIODevice`` with its queues, every field as QEMU held it."""
    lay = rd.layout
    what = f"VirtIODevice at {vdev_hva:#x}"
    d = rd.struct("VirtIODevice", vdev_hva, what)
    ds = rd.struct("DeviceState", vdev_hva, what)
    known = rd.device_names.get(d["device_id"])
    if rd.valid(d["name"], 1):
        name = rd.cstring(d["name"], f"{what}: name")
        if known is not None and name != known:
            raise profile_mismatch(lay, rd.mem, "VirtIODevice.name == virtio_device_names[device_id]",
                            f"{what}: name {name[:40]!r}, device_id {d['device_id']}",
                            rd.file_offset(vdev_hva))
    elif known is not None:
        # .rodata is not in the core (absent is not wrong): the name table gives it, and
        # check_device_names() checks the pointer against virtio_device_names[] in .data.rel.ro
        name = known
        rd.skip("VirtIODevice.name == virtio_device_names[device_id]",
                f"the name strings (.rodata, e.g. {d['name']:#x}) are not in the core; names "
                f"from the profile's table")
    else:
        raise profile_mismatch(lay, rd.mem, "VirtIODevice.device_id names a device",
                        f"{what}: device_id {d['device_id']} is not in virtio_device_names[] and "
                        f"the name string at {d['name']:#x} is not in the core",
                        rd.file_offset(vdev_hva))
    path = rd.cstring(ds["canonical_path"], f"{what}: canonical_path")
    if not path.startswith("/machine/") and not path.startswith("/objects/"):
        raise profile_mismatch(lay, rd.mem, "DeviceState.canonical_path starts /machine/",
                        f"{what}: canonical_path {path[:60]!r}", rd.file_offset(vdev_hva))
    if not ds["realized"]:
        raise profile_mismatch(lay, rd.mem, "DeviceState.realized on virtio_list",
                        f"{what} ({path}) is not realized", rd.file_offset(vdev_hva))
    vqs = read_virtqueues(rd, d["vq"], vdev_hva)
    bus_name = rd.cstring(d["bus_name"], f"{what}: bus_name") if d["bus_name"] else None
    nums = vqs["vring.num"]
    nonzero = nums != 0
    num_vqs = int(np.argmin(nonzero)) if not nonzero.all() else len(nums)
    queues = {}
    for i in np.flatnonzero(nonzero).tolist():
        q = vqs[i]
        st = VirtQueueState(
            queue_index=i, vring_num=int(q["vring.num"]), vring_num_default=int(q["vring.num_default"]),
            vring_align=int(q["vring.align"]), desc=int(q["vring.desc"]), avail=int(q["vring.avail"]),
            used=int(q["vring.used"]), last_avail_idx=int(q["last_avail_idx"]),
            shadow_avail_idx=int(q["shadow_avail_idx"]), used_idx=int(q["used_idx"]),
            inuse=int(q["inuse"]), signalled_used=int(q["signalled_used"]),
            signalled_used_valid=bool(q["signalled_used_valid"]),
            notification=bool(q["notification"]),
            provenance=dict.fromkeys(_CORE_QUEUE_FIELDS, "core"))
        queues[i] = st
    dev = VirtIODeviceState(
        canonical_path=path, name=name, device_id=d["device_id"],
        guest_features=d["guest_features"], host_features=d["host_features"],
        backend_features=d["backend_features"], status=d["status"], isr=d["isr"],
        queue_sel=d["queue_sel"], vm_running=d["vm_running"], broken=d["broken"],
        disabled=d["disabled"], use_started=d["use_started"], started=d["started"],
        start_on_kick=d["start_on_kick"], disable_legacy_check=d["disable_legacy_check"],
        bus_name=bus_name, use_guest_notifier_mask=d["use_guest_notifier_mask"],
        device_endian=d["device_endian"], vhost_started=d["vhost_started"],
        num_vqs=num_vqs, queues=queues,
        absent_queues={i for i in range(lay.queue_max) if not nonzero[i]},
        provenance=dict.fromkeys(_CORE_DEVICE_FIELDS, "core"))
    return dev, d


# every value of a record read from QEMU's structs is the core's
_CORE_QUEUE_FIELDS = tuple(f.name for f in dataclasses.fields(VirtQueueState)
                           if f.name not in ("queue_index", "provenance"))
_CORE_DEVICE_FIELDS = tuple(f.name for f in dataclasses.fields(VirtIODeviceState)
                            if f.name not in ("canonical_path", "queues", "absent_queues",
                                              "provenance"))


def _is_device(rd: CoreReader, addr: int) -> bool:
    """Whether ``addr`` is a ``VirtIODevice``: its ``vq[0].vdev`` and ``vq[1].vdev`` point back."""
    lay = rd.layout
    if not rd.valid(addr, lay.sizes["VirtIODevice"]):
        return False
    vq = int(np.frombuffer(bytes(rd.read(addr + lay.off("VirtIODevice", "vq"), 8, "vq")), "<u8")[0])
    stride, vd = lay.sizes["VirtQueue"], lay.off("VirtQueue", "vdev")
    if not rd.valid(vq, 2 * stride):
        return False
    back = np.frombuffer(bytes(rd.read(vq, 2 * stride, "VirtQueue")), "<u8")
    return int(back[vd // 8]) == addr and int(back[(stride + vd) // 8]) == addr


def is_virtio_device(rd: CoreReader, addr: int) -> bool:
    """Whether the object at ``addr`` is a ``VirtIODevice`` (its queues point back at it)."""
    return _is_device(rd, addr)


def walk_virtio_list(rd: CoreReader, any_vdev: int, binary: tuple[int, int]) -> tuple[int, list[int]]:
    """``virtio_list`` from one of its devices: ``(head hva, devices in list order)``.

    Walks ``tql_prev`` back to the head (the first link that is not a device's), then
    ``tqh_first``/``tqe_next`` forward, checking each ``tql_prev`` and bounding the walk.
    """
    lay = rd.layout
    nxt = lay.off("VirtIODevice", "next.tqe_next")
    prv = lay.off("VirtIODevice", "next.tqe_circ.tql_prev")
    size = lay.sizes["VirtIODevice"]

    def link(addr: int, off: int, what: str) -> int:
        return int(np.frombuffer(bytes(rd.read(addr + off, 8, what)), "<u8")[0])

    if not _is_device(rd, any_vdev):
        raise profile_mismatch(lay, rd.mem, "VirtIODevice.vq points back at its VirtQueue array",
                        f"device {any_vdev:#x}", rd.file_offset(any_vdev))
    cur, seen = any_vdev, set()
    for _ in range(MAX_DEVICES):
        seen.add(cur)
        prev_link = link(cur, prv, f"virtio_list tql_prev of {cur:#x}")
        cand = prev_link - nxt
        if prev_link == 0:
            raise profile_mismatch(lay, rd.mem, "virtio_list tql_prev != NULL", f"device {cur:#x}")
        if cand in seen:
            raise profile_mismatch(lay, rd.mem, "virtio_list links", f"tql_prev of {cur:#x} loops")
        if not _is_device(rd, cand):                     # the static list head (in .bss)
            head = prev_link
            break
        cur = cand
    else:
        raise CorruptInput(rd.name, f"virtio_list: more than {MAX_DEVICES} devices")
    first = link(head, 0, "virtio_list head")
    order, at, expect_prev = [], first, head
    while at:
        if len(order) >= MAX_DEVICES or at in order:
            raise CorruptInput(rd.name, f"virtio_list: loop at {at:#x}", offset=rd.file_offset(at))
        if not rd.valid(at, size):
            raise MissingData(rd.name, f"virtio_list element {at:#x} is not in the core")
        if link(at, prv, "virtio_list tql_prev") != expect_prev:
            raise profile_mismatch(lay, rd.mem, "virtio_list tql_prev == previous link",
                            f"device {at:#x}", rd.file_offset(at))
        order.append(at)
        expect_prev = at + nxt
        at = link(at, nxt, "virtio_list tqe_next")
    if any_vdev not in order:
        raise profile_mismatch(lay, rd.mem, "virtio_list holds the device", f"{any_vdev:#x} not reached")
    return head, order


def check_device_names(rd: CoreReader, raw: list[Any], runs: list[tuple[int, int]]) -> int | None:
    """Find ``virtio_device_names[]`` in the binary's data: ``names[device_id] == vdev->name``.

    QEMU 7.2 ``virtio_init`` sets ``vdev->name = virtio_device_names[device_id]``; the strings are
    in ``.rodata`` (often not in a core) but the pointer array is in ``.data.rel.ro``, which is.
    :return: the array's address, or ``None`` when no device is given.
    :raises CorruptInput: when no array fits every device (the profile's check fails).
    """
    if not raw:
        return None
    first = raw[0]
    hits = find_pointers(rd.mem, runs, [first["name"]], 8 * first["device_id"])[first["name"]]
    for base in hits:
        ok = True
        for d in raw[1:]:
            at = base + 8 * d["device_id"]
            if not rd.valid(at, 8) or \
                    int(np.frombuffer(bytes(rd.read(at, 8, "name")), "<u8")[0]) != d["name"]:
                ok = False
                break
        if ok:
            return base
    raise profile_mismatch(rd.layout, rd.mem, "VirtIODevice.name == virtio_device_names[device_id]",
                    f"no pointer array in the binary's data has every device's name at its "
                    f"device_id ({len(hits)} candidates for device_id {first['device_id']})")


def find_vhost_dev(rd: CoreReader, vdev_hva: int, runs: list[tuple[int, int]]) -> VhostDev | None:
    """The ``vhost_dev`` that ``get_vhost`` would return: ``hdev->vdev == vdev``, lowest ``vq_index``."""
    lay = rd.layout
    hits = find_pointers(rd.mem, runs, [vdev_hva], lay.off("vhost_dev", "vdev"))[vdev_hva]
    best = None
    for h, hd in rd.held_structs("vhost_dev", hits):
        nvqs = hd["nvqs"]
        if not (0 < nvqs <= lay.queue_max) or not (0 <= hd["vq_index"] < lay.queue_max):
            continue
        if not rd.valid(hd["vqs"], nvqs * lay.sizes["vhost_virtqueue"]):
            continue
        if not _vqs_point_back(rd, h, hd["vqs"], nvqs):
            continue          # another struct with a pointer to the device at vdev's place
        if best is None or hd["vq_index"] < best[1]["vq_index"]:
            best = (h, hd)
    if best is None:
        return None
    h, hd = best
    vqs = {}
    for i in range(hd["nvqs"]):
        a = hd["vqs"] + i * lay.sizes["vhost_virtqueue"]
        v = rd.struct("vhost_virtqueue", a, f"vhost_virtqueue at {a:#x}")
        vqs[i] = VhostVirtqueue(kick=v["kick"], call=v["call"], desc=v["desc"], avail=v["avail"],
                                used=v["used"], num=v["num"], desc_phys=v["desc_phys"],
                                desc_size=v["desc_size"], avail_phys=v["avail_phys"],
                                avail_size=v["avail_size"], used_phys=v["used_phys"],
                                used_size=v["used_size"])
    fields = lay.offsets["vhost_dev"]
    return VhostDev(n_mem_sections=hd["n_mem_sections"], n_tmp_sections=hd["n_tmp_sections"],
                    nvqs=hd["nvqs"], vq_index=hd["vq_index"], features=hd["features"],
                    acked_features=hd["acked_features"],
                    # 11.x keeps neither in vhost_dev (its VhostStatus has no backend-features)
                    backend_features=hd["backend_features"] if "backend_features" in fields else 0,
                    protocol_features=(hd["protocol_features"] if "protocol_features" in fields
                                       else _vhost_user_protocols(rd, h, hd)),
                    max_queues=hd["max_queues"],
                    backend_cap=hd["backend_cap"], log_enabled=hd["log_enabled"],
                    log_size=hd["log_size"], vqs=vqs)


def _vqs_point_back(rd: CoreReader, hdev: int, vqs: int, nvqs: int) -> bool:
    """``vhost_virtqueue_init`` sets every ``hdev->vqs[i].dev`` to ``hdev``: what tells the
    ``vhost_dev`` from the other heap words that hold the device's address."""
    lay = rd.layout
    if "dev" not in lay.offsets["vhost_virtqueue"]:
        return True
    size, at = lay.sizes["vhost_virtqueue"], lay.off("vhost_virtqueue", "dev")
    return all(int.from_bytes(rd.read(vqs + i * size + at, 8, "vhost_virtqueue.dev"), "little")
               == hdev for i in range(nvqs))


def _vhost_user_protocols(rd: CoreReader, hdev: int, hd) -> int:
    """11.x's protocol features: a word of ``struct vhost_user``, the vhost-user backend's
    ``hdev->opaque`` (whose first word points back at ``hdev``); 0 for any other backend (a
    vhost-kernel ``opaque`` is a file descriptor, not a pointer), as in the releases that kept
    ``protocol_features`` in ``vhost_dev``."""
    lay = rd.layout
    if "vhost_user" not in lay.offsets or "opaque" not in lay.offsets["vhost_dev"]:
        return 0
    user = hd["opaque"]
    at_dev = user + lay.off("vhost_user", "dev")
    at_pf = user + lay.off("vhost_user", "protocol_features")
    if not (rd.valid(at_dev, 8) and rd.valid(at_pf, 8)):
        return 0
    if int.from_bytes(rd.read(at_dev, 8, "vhost_user.dev"), "little") != hdev:
        return 0
    return int.from_bytes(rd.read(at_pf, 8, "vhost_user.protocol_features"), "little")

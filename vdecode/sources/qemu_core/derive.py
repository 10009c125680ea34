"""
A layout for a QEMU build no profile is made for, derived from the core itself
------------------------------------------------------------------------------
When no shipped ``formats/qemu-*/layout-<arch>.json`` passes its checks on a core (a release or a
distro build without a profile), the offsets the reader needs are found from what every QEMU core
holds, starting from a *template* (a shipped layout, for field order and the fields no anchor
pins):

- ``RAMBlock.idstr``, ``RAMBlock.mr`` and ``MemoryRegion.ram_block``: a block named for main RAM or
  firmware (``pc.ram``, ``*.rom`` ...) whose region points back at it (``memory_region_init_ram``);
- ``VirtQueue`` (size, ``queue_index``, ``vdev``) and ``VirtIODevice.vq``: the
  ``VirtQueue[VIRTIO_QUEUE_MAX]`` arrays, where a u16 counts 0, 1, 2 … at one stride and a
  pointer shared by all entries is a device whose ``vq`` points back at the array (``virtio_init``);
- ``DeviceState.canonical_path``: a pointer to a ``/machine/…`` string in every device;
- ``VirtIODevice.device_id``: a u16 that gives every device's ``name`` pointer the same slot of
  one pointer array in the binary's data (``virtio_device_names[]``) and is a known device id;
- ``VirtIODevice.device_endian``: a byte that is 1 (little) or 2 (big) in every device;
- ``vhost_virtqueue`` size and ``dev``: every ``vqs[i].dev`` points back at its ``vhost_dev``.

Every other field keeps its place relative to the anchor before it in the template (a *group*:
``name`` … ``vq`` move with ``vq``). Each field gets a confidence:

- ``anchored``: its offset is where a value the core pins was found;
- ``checked``: placed relative to an anchor, and its values on this core pass a check (vring sizes
  0 or a power of two, ``used_idx`` equal to the guest's ``used->idx``, …);
- ``template``: placed relative to an anchor; nothing on this core can check it.

The derived layout is then read by the same reader, with the same invariants, as a shipped one.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np

from vdecode.errors import CorruptInput
from vdecode.sources.qemu_core.layout import QemuLayout, shipped_structs
from vdecode.sources.qemu_core.memory import CoreReader, HostMemory, scan_runs
from vdecode.sources.qemu_core.ram import RAM_ANCHOR, find_ram_blocks, map_guest_ram

__all__ = ("READER_FIELDS", "compare_layouts", "derive_layout", "derived_summary",
           "layout_with_evidence")

ANCHORED, CHECKED, TEMPLATE = "anchored", "checked", "template"
MAX_ANCHOR_HITS = 64           # RAMBlock idstr candidates tried
MAX_IDSTR_OFFSET = 512         # where idstr may sit in a RAMBlock
MAX_MR_FIELD = 256             # where ram_block may sit in a MemoryRegion
STRIDE_SPAN = 16               # VirtQueue sizes tried: the template's ± 16 × 8 bytes
DEVICE_SCAN = 1024             # bytes of a VirtIODevice searched for its fields
MAX_ARRAYS = 64
EMBEDDED_SCAN = 16384          # bytes of a device object searched for an embedded vhost_dev

# QOM's ObjectProperty (include/qom/object.h, unchanged from QEMU 2.x to 10.x) and glib's private
# struct _GHashTable (glib/ghash.c, 2.60+): the QOM tree walk of QEMU 8.2+ needs them, and a 7.2
# template does not carry them. They are data: taken from the oldest shipped layout that declares
# them (:func:`~vdecode.sources.qemu_core.layout.shipped_structs`), not declared again here.
_QOM_NAMES = ("ObjectProperty", "GHashTable")


# The fields the core reader reads (devices.py, ram.py, qom.py), and the two strides it walks
# arrays by: what a derived layout must get right
READER_FIELDS = {
    "Object": ("parent", "properties"),
    "DeviceState": ("canonical_path", "realized"),
    "VirtIODevice": ("name", "status", "isr", "queue_sel", "guest_features", "host_features",
                     "backend_features", "vq", "device_id", "vm_running", "broken", "disabled",
                     "use_started", "started", "start_on_kick", "disable_legacy_check",
                     "vhost_started", "bus_name", "device_endian", "use_guest_notifier_mask",
                     "next.tqe_next", "next.tqe_circ.tql_prev"),
    "VirtQueue": ("vring.num", "vring.num_default", "vring.align", "vring.desc", "vring.avail",
                  "vring.used", "last_avail_idx", "shadow_avail_idx", "used_idx",
                  "signalled_used", "signalled_used_valid", "notification", "queue_index",
                  "inuse", "vdev"),
    "vhost_dev": ("vdev", "n_mem_sections", "n_tmp_sections", "vqs", "nvqs", "vq_index",
                  "features", "acked_features", "backend_features", "protocol_features",
                  "max_queues", "backend_cap", "log_enabled", "log_size"),
    "vhost_virtqueue": ("kick", "call", "desc", "avail", "used", "num", "desc_phys", "desc_size",
                        "avail_phys", "avail_size", "used_phys", "used_size"),
    "RAMBlock": ("mr", "host", "offset", "used_length", "max_length", "idstr", "next.le_next",
                 "next.le_prev"),
    "MemoryRegion": ("ram_block", "container", "size", "addr", "enabled", "alias", "alias_offset",
                     "name"),
    "ObjectProperty": ("type", "opaque"),
    "GHashTable": ("size", "nnodes", "hashes", "values"),
}
STRIDES = ("VirtQueue", "vhost_virtqueue")       # arrays: their size is read as a field


def compare_layouts(derived: QemuLayout, shipped: QemuLayout) -> dict[str, list[str]]:
    """``derived`` against a hand-made layout on :data:`READER_FIELDS` (and the array strides):
    ``{"agree": [...], "differ": [...], "unchecked": [...]}``; ``unchecked`` are differences in
    fields the core gave nothing to check (confidence ``template``), ``differ`` the others.
    ``virtio_list`` links count only when the derived layout lists devices by it."""
    fields = derived.data.get("derived", {}).get("fields", {})
    out: dict[str, list[str]] = {"agree": [], "differ": [], "unchecked": []}
    listed = derived.data.get("device_discovery") == "virtio_list"
    for struct, names in READER_FIELDS.items():
        if struct not in shipped.offsets:
            continue
        items = [(f"{struct}.{f}", derived.offsets.get(struct, {}).get(f),
                  shipped.offsets[struct].get(f)) for f in names
                 if listed or not f.startswith("next.tqe")]
        if struct in STRIDES:
            items.append((f"{struct}.size", derived.sizes.get(struct), shipped.sizes[struct]))
        for key, got, want in items:
            if got == want:
                out["agree"].append(key)
            elif fields.get(key, {}).get("confidence", TEMPLATE) == TEMPLATE:
                out["unchecked"].append(f"{key}: derived {got}, profile {want}")
            else:
                out["differ"].append(f"{key}: derived {got}, profile {want}")
    return out


class _Mem:
    """Little-endian reads of the core's host memory that answer ``None`` for absent bytes."""

    def __init__(self, mem: HostMemory) -> None:
        self.mem = mem

    def ok(self, addr: int, n: int) -> bool:
        return addr > 0 and self.mem.is_present(addr, n)

    def u(self, addr: int, n: int) -> int | None:
        if not self.ok(addr, n):
            return None
        return int.from_bytes(bytes(self.mem.read(addr, n)), "little")

    def block(self, addr: int, n: int) -> bytes | None:
        return bytes(self.mem.read(addr, n)) if self.ok(addr, n) else None

    def cstr(self, addr: int, n: int = 64) -> bytes | None:
        for k in (n, 16, 1):
            b = self.block(addr, k)
            if b is not None:
                return b.split(b"\0", 1)[0]
        return None


class _Derivation:
    """The template's data being moved field by field, with each field's evidence."""

    def __init__(self, template: QemuLayout) -> None:
        self.template = template
        self.data = copy.deepcopy(_thaw(template.data))
        missing = [n for n in _QOM_NAMES if n not in self.data["structs"]]
        self.qom = _thaw(shipped_structs(template.arch, missing)) if missing else {}
        for name, body in self.qom.get("structs", {}).items():
            self.data["structs"][name] = copy.deepcopy(body)
        for name, bits in self.qom.get("bitfields", {}).items():
            self.data.setdefault("bitfields", {})[name] = copy.deepcopy(bits)
        self.evidence: dict[str, dict[str, Any]] = {}

    def offset(self, struct: str, fld: str) -> int:
        return next(int(f["offset"]) for f in self.data["structs"][struct]["fields"]
                    if f["name"] == fld)

    def t_off(self, struct: str, fld: str) -> int:
        return self.template.offsets[struct][fld] if struct in self.template.offsets else \
            next(int(f["offset"]) for f in self.qom["structs"][struct]["fields"] if f["name"] == fld)

    def t_size(self, struct: str) -> int:
        body = self.template.data["structs"].get(struct) or self.qom["structs"][struct]
        return int(body["size"])

    def fields(self, struct: str) -> list[dict[str, Any]]:
        return self.data["structs"][struct]["fields"]

    def note(self, struct: str, fld: str, confidence: str, how: str) -> None:
        self.evidence[f"{struct}.{fld}"] = {"offset": self.offset(struct, fld),
                                            "confidence": confidence, "evidence": how}

    def move_group(self, struct: str, anchors: dict[str, int], head_fixed: bool) -> None:
        """Place ``struct``'s fields: each anchor where it was found, every other field by the
        shift of the nearest anchor before it in the template (before the first anchor: the
        first anchor's shift, or none when ``head_fixed``)."""
        order = sorted(self.template_fields(struct), key=lambda f: f["offset"])
        shifts, shift = {}, None
        first = next((anchors[f["name"]] - f["offset"] for f in order if f["name"] in anchors), 0)
        for f in order:
            if f["name"] in anchors:
                shift = anchors[f["name"]] - f["offset"]
            shifts[f["name"]] = shift if shift is not None else (0 if head_fixed else first)
        for f in self.fields(struct):
            was = next(t["offset"] for t in order if t["name"] == f["name"])
            f["offset"] = was + shifts[f["name"]]
        self.data["structs"][struct]["size"] = max(
            self.t_size(struct) + max(shifts.values(), default=0),
            max(f["offset"] + f["size"] for f in self.fields(struct)))

    def template_fields(self, struct: str) -> list[dict[str, Any]]:
        if struct in self.template.data["structs"]:
            return [dict(f) for f in self.template.data["structs"][struct]["fields"]]
        return [dict(f) for f in self.qom["structs"][struct]["fields"]]

    def layout(self, source: str) -> QemuLayout:
        return QemuLayout(self.data, source)


def _thaw(obj: Any) -> Any:
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_thaw(v) for v in obj]
    return obj


def _fail(name: str, what: str) -> CorruptInput:
    return CorruptInput(name, f"no layout could be derived from this core: {what}")


def derive_layout(mem: HostMemory, writable: list[tuple[int, int]], binary_span: tuple[int, int],
                  bin_runs: list[tuple[int, int]], template: QemuLayout,
                  device_names: dict[int, str]) -> QemuLayout:
    """A layout for this core's QEMU, derived from its own structures with ``template``'s field
    order; ``layout.data["derived"]`` holds each field's offset, confidence and evidence.

    :param writable: the core's writable mappings present in full (``(hva, size)``).
    :param device_names: ``device_id`` → name (the template release's ``virtio_device_names[]``).
    :raises CorruptInput: an anchor is not found (the message says which).
    """
    m = _Mem(mem)
    d = _Derivation(template)
    _derive_ramblock(m, d, writable, mem.name)
    probe = d.layout("derived")
    blocks = find_ram_blocks(CoreReader(mem, probe, device_names), writable, binary_span)
    if not blocks:
        raise _fail(mem.name, "the RAMBlock list does not read with the derived offsets")
    _note_ramblock(d, blocks)
    guest = [(b.host, b.max_length) for b in blocks]
    heap = [(a, n) for a, n in writable if not any(h <= a < h + s for h, s in guest)]
    guest_ram = map_guest_ram(CoreReader(mem, d.layout("derived"), device_names), blocks, heap)
    d.note("MemoryRegion", "container", CHECKED if guest_ram else TEMPLATE,
           f"relative to ram_block; {len(guest_ram)} guest RAM runs map through the 'system' "
           f"region's containers and aliases" if guest_ram else "relative to ram_block")
    for fld in ("size", "addr", "enabled", "alias", "alias_offset", "name"):
        d.note("MemoryRegion", fld, CHECKED if guest_ram else TEMPLATE,
               "relative to ram_block, read back by the guest RAM map" if guest_ram
               else "relative to ram_block")
    arrays = _derive_virtqueue(m, d, heap, mem.name)
    vdevs = sorted({v for _, v in arrays})
    _derive_device(m, d, vdevs, bin_runs, device_names, mem.name)
    _check_queues(m, d, arrays, guest_ram)
    _derive_vhost(m, d, vdevs, heap)
    _derive_discovery(mem, d, vdevs, binary_span, device_names)
    tsrc = template.source
    d.data.pop("package", None)
    d.data.update(build_ids=[], generated_by=f"derived from {mem.name} with the template {tsrc}",
                  source=f"derived from the core's own structures (anchors: RAMBlock idstr and "
                         f"mr->ram_block, VirtQueue arrays, device ids, canonical paths), "
                         f"field order of {tsrc}",
                  derived={"template": tsrc, "fields": d.evidence})
    return d.layout(f"layout derived from the core (template {tsrc})")


def derived_summary(layout: QemuLayout) -> dict[str, Any]:
    """What ``info`` says about a derived layout: counts by confidence and every field's."""
    der = layout.data.get("derived") or {}
    fields = der.get("fields", {})
    counts = {c: sum(1 for f in fields.values() if f["confidence"] == c)
              for c in (ANCHORED, CHECKED, TEMPLATE)}
    return {"template": der.get("template"), "fields_by_confidence": counts,
            "fields": {k: f"{v['offset']} {v['confidence']}: {v['evidence']}"
                       for k, v in fields.items()}}


def layout_with_evidence(layout: QemuLayout) -> dict[str, Any]:
    """The derived layout's data as ``vdecode profile`` writes it: the shape of a shipped
    ``layout-<arch>.json``, each derived field carrying its ``confidence`` and ``evidence``."""
    data = _thaw(layout.data)
    fields = data.pop("derived", {}).get("fields", {})
    data["derived_from"] = layout.data["derived"]["template"]
    for struct, body in data["structs"].items():
        for f in body["fields"]:
            ev = fields.get(f"{struct}.{f['name']}")
            if ev:
                f.update(confidence=ev["confidence"], evidence=ev["evidence"])
    return data


# --- RAMBlock and MemoryRegion -----------------------------------------------------------------

def _derive_ramblock(m: _Mem, d: _Derivation, writable: list[tuple[int, int]], name: str) -> None:
    """``RAMBlock.idstr``, ``RAMBlock.mr``, ``MemoryRegion.ram_block`` from blocks whose region
    points back at them; the offsets most hits agree on (nearest the template's on a tie)."""
    t_id, t_mr = d.t_off("RAMBlock", "idstr"), d.t_off("RAMBlock", "mr")
    t_rb = d.t_off("MemoryRegion", "ram_block")
    votes: dict[tuple[int, int, int], int] = {}
    hits = 0
    for base, mv in scan_runs(m.mem, writable):
        for hit in RAM_ANCHOR.finditer(mv):
            s = base + hit.start()
            hits += 1
            for found in _ramblock_fits(m, s):
                votes[found] = votes.get(found, 0) + 1
            if hits >= MAX_ANCHOR_HITS:
                break
        if hits >= MAX_ANCHOR_HITS or sum(votes.values()) >= 8:
            break
    if not votes:
        raise _fail(name, f"no RAMBlock idstr ({hits} names like pc.ram seen) has a MemoryRegion "
                          f"pointing back at its block")
    best = max(votes, key=lambda k: (votes[k], -abs(k[0] - t_id) - abs(k[1] - t_mr)
                                     - abs(k[2] - t_rb)))
    idoff, mroff, rboff = best
    d.move_group("RAMBlock", {"mr": mroff, "idstr": idoff}, head_fixed=True)
    d.move_group("MemoryRegion", {"ram_block": rboff}, head_fixed=True)
    how = f"{votes[best]} blocks named like pc.ram have mr->ram_block == the block"
    d.note("RAMBlock", "idstr", ANCHORED, how)
    d.note("RAMBlock", "mr", ANCHORED, how)
    d.note("MemoryRegion", "ram_block", ANCHORED, how)


def _ramblock_fits(m: _Mem, s: int):
    """``(idstr, mr, ram_block)`` offsets that make the string at ``s`` a block's idstr."""
    for idoff in range(8, MAX_IDSTR_OFFSET, 4):
        cand = s - idoff
        if cand % 8:
            continue
        head = m.block(cand, idoff)
        if head is None:
            continue
        words = np.frombuffer(head[:idoff // 8 * 8], "<u8")
        for k, p in enumerate(words.tolist()):
            if p % 8 or not m.ok(p, MAX_MR_FIELD):
                continue
            mr = np.frombuffer(m.block(p, MAX_MR_FIELD), "<u8")
            for j in np.flatnonzero(mr == cand).tolist():
                yield idoff, 8 * k, 8 * j


def _note_ramblock(d: _Derivation, blocks) -> None:
    n = len(blocks)
    for fld in ("next.le_next", "next.le_prev"):
        d.note("RAMBlock", fld, CHECKED, f"relative to idstr; the list of {n} blocks walks from "
                                         f"its head with every block's region pointing back")
    for fld in ("host", "offset", "used_length", "max_length"):
        ok = all(0 < b.used_length <= b.max_length for b in blocks)
        d.note("RAMBlock", fld, CHECKED if ok else TEMPLATE,
               f"relative to mr; 0 < used_length <= max_length in all {n} blocks" if ok
               else "relative to mr")


# --- VirtQueue arrays ----------------------------------------------------------------------------

def _derive_virtqueue(m: _Mem, d: _Derivation, heap: list[tuple[int, int]],
                      name: str) -> list[tuple[int, int]]:
    """The ``VirtQueue`` size, ``queue_index``, ``vdev`` and ``VirtIODevice.vq`` offsets from the
    arrays; returns ``(array, vdev)`` of each."""
    t_size = d.template.sizes["VirtQueue"]
    qmax = d.template.queue_max
    strides = sorted(range(max(16, t_size - 8 * STRIDE_SPAN), t_size + 8 * STRIDE_SPAN + 1, 8),
                     key=lambda s: abs(s - t_size))
    for stride in strides:
        found = []
        for qi_addr in _index_runs(m.mem, heap, stride):
            fit = _array_fit(m, qi_addr, stride, qmax)
            if fit:
                found.append(fit)
            if len(found) >= MAX_ARRAYS:
                break
        if not found:
            continue
        votes: dict[tuple[int, int, int], int] = {}
        for _, _, qi, vd, vq in found:
            votes[(qi, vd, vq)] = votes.get((qi, vd, vq), 0) + 1
        qi, vd, vq = max(votes, key=votes.get)
        arrays = [(a, v) for a, v, q, w, o in found if (q, w, o) == (qi, vd, vq)]
        d.data["structs"]["VirtQueue"]["size"] = stride
        d.move_group("VirtQueue", {"queue_index": qi, "vdev": vd}, head_fixed=True)
        d.data["structs"]["VirtQueue"]["size"] = stride
        d.move_group("VirtIODevice", {"vq": vq}, head_fixed=False)
        how = (f"{len(arrays)} arrays of {qmax} entries {stride} bytes apart: queue_index counts "
               f"0..{qmax - 1}, vdev is one device whose vq points back at the array")
        d.note("VirtQueue", "queue_index", ANCHORED, how)
        d.note("VirtQueue", "vdev", ANCHORED, how)
        d.note("VirtIODevice", "vq", ANCHORED, how)
        d.evidence["VirtQueue.size"] = {"offset": stride, "confidence": ANCHORED, "evidence": how}
        return arrays
    raise _fail(name, "no VirtQueue[VIRTIO_QUEUE_MAX] array (a u16 counting 0, 1, 2 … at one "
                      "stride with one device pointer) in QEMU's heap")


def _index_runs(mem: HostMemory, runs: list[tuple[int, int]], stride: int, n: int = 8):
    """Addresses where a u16 counts ``0 … n-1`` at ``stride`` bytes apart."""
    s16 = stride // 2
    for start, mv in scan_runs(mem, runs):
        n2 = len(mv) // 2
        if n2 <= n * s16:
            continue
        w16 = np.frombuffer(mv[:n2 * 2], dtype="<u2")
        i = np.flatnonzero(w16[s16:n2 - (n - 2) * s16] == 1)
        ok = w16[i] == 0
        for k in range(2, n):
            ok &= w16[i + k * s16] == k
        for j in i[ok].tolist():
            yield start + 2 * j


def _array_fit(m: _Mem, qi_addr: int, stride: int, qmax: int):
    """``(array, vdev, queue_index off, vdev off, VirtIODevice.vq off)`` for the run at
    ``qi_addr``, or None: the pointer all entries share is a device pointing back at the array."""
    lo = qi_addr - stride + 2
    lo -= lo % 8
    for x in range(lo, qi_addr + stride, 8):
        v = m.u(x, 8)
        if not v or v % 8 or any(m.u(x + k * stride, 8) != v for k in (1, 2, 3, 7)):
            continue
        dev = m.block(v, DEVICE_SCAN)
        if dev is None:
            continue
        words = np.frombuffer(dev, "<u8")
        for k in np.flatnonzero((words > qi_addr - stride) & (words <= qi_addr)).tolist():
            base = int(words[k])
            if base % 8 or not (0 <= x - base < stride):
                continue
            last = base + (qmax - 1) * stride
            if m.u(last + qi_addr - base, 2) != qmax - 1 or m.u(last + x - base, 8) != v:
                continue
            return base, v, qi_addr - base, x - base, 8 * k
    return None


# --- VirtIODevice and DeviceState -----------------------------------------------------------------

def _derive_device(m: _Mem, d: _Derivation, vdevs: list[int], bin_runs: list[tuple[int, int]],
                   names: dict[int, str], core: str) -> None:
    n = len(vdevs)
    # DeviceState.canonical_path: a pointer to "/machine/..." in every device
    ds_size = d.offset("VirtIODevice", "name")
    paths = []
    for off in range(0, ds_size, 8):
        strs = [m.cstr(m.u(v + off, 8) or 0, 10) for v in vdevs]
        if all(s is not None and s.startswith(b"/machine/") for s in strs):
            paths.append(off)
    if not paths:
        raise _fail(core, "no pointer to a /machine/... path in every VirtIODevice")
    t_cp = d.t_off("DeviceState", "canonical_path")
    cp = min(paths, key=lambda o: abs(o - t_cp))
    d.move_group("DeviceState", {"canonical_path": cp}, head_fixed=True)
    d.data["structs"]["DeviceState"]["size"] = ds_size
    d.note("DeviceState", "canonical_path", ANCHORED,
           f"a pointer to a /machine/... string in all {n} devices")
    realized = d.offset("DeviceState", "realized")
    ok = all(m.u(v + realized, 1) == 1 for v in vdevs)
    d.note("DeviceState", "realized", CHECKED if ok else TEMPLATE,
           "relative to canonical_path; 1 in every device holding queues" if ok
           else "relative to canonical_path")
    # VirtIODevice.device_id: the u16 that is each device's id
    name_off = d.offset("VirtIODevice", "name")
    name_ptr = [m.u(v + name_off, 8) or 0 for v in vdevs]
    t_vq, t_id = d.t_off("VirtIODevice", "vq"), d.t_off("VirtIODevice", "device_id")
    want = d.offset("VirtIODevice", "vq") + (t_id - t_vq)
    table = _names_array(m, bin_runs, name_ptr, vdevs, want)
    cands = []
    for off in range(0, DEVICE_SCAN - 2, 2):
        ids = [m.u(v + off, 2) for v in vdevs]
        if any(i not in names for i in ids):
            continue
        # one id per name pointer, and the same for the same pointer
        if len({(i, p) for i, p in zip(ids, name_ptr)}) != len(set(name_ptr)) or \
                len(set(ids)) != len(set(name_ptr)):
            continue
        if table is not None and table[1] != off:
            continue
        cands.append(off)
    if not cands:
        raise _fail(core, "no u16 in the VirtIODevices is a device id matching their name pointers")
    dev_id = min(cands, key=lambda o: abs(o - want))
    # device_endian: 1 (little) or 2 (big) in every device
    t_end = d.t_off("VirtIODevice", "device_endian")
    want_end = dev_id + (t_end - t_id)
    ends = [o for o in range(dev_id + 2, DEVICE_SCAN)
            if all(m.u(v + o, 1) in (1, 2) for v in vdevs)]
    end = min(ends, key=lambda o: abs(o - want_end)) if ends else want_end
    d.move_group("VirtIODevice", {"vq": d.offset("VirtIODevice", "vq"), "device_id": dev_id,
                                  "device_endian": end}, head_fixed=False)
    how_id = (f"the u16 giving all {n} devices' name pointers one slot each of "
              f"virtio_device_names[] at {table[0]:#x} in the binary's data" if table else
              f"the u16 that is a known device id, one per name pointer, in all {n} devices")
    d.note("VirtIODevice", "device_id", ANCHORED if table else CHECKED, how_id)
    d.note("VirtIODevice", "device_endian", CHECKED if ends else TEMPLATE,
           f"1 (little) or 2 (big) in all {n} devices, nearest the template's place"
           if ends else "relative to device_id")
    d.note("VirtIODevice", "name", ANCHORED if table else TEMPLATE,
           "relative to vq; virtio_device_names[device_id] == name" if table else "relative to vq")
    _note_device_values(m, d, vdevs)


def _names_array(m: _Mem, runs: list[tuple[int, int]], name_ptr: list[int], vdevs: list[int],
                 want: int) -> tuple[int, int] | None:
    """``(virtio_device_names[] hva, device_id offset)``: a pointer array in the binary's data that
    holds every device's name pointer at the index a u16 of that device gives."""
    present = [(a, n) for a, n in runs if m.ok(a, n)]
    if not present or not name_ptr:
        return None
    first = name_ptr[0]
    for start, mv in scan_runs(m.mem, present):
        w = np.frombuffer(mv[:len(mv) // 8 * 8], "<u8")
        for k in np.flatnonzero(w == first).tolist():
            for off in sorted(range(0, DEVICE_SCAN - 2, 2), key=lambda o: abs(o - want)):
                idx = m.u(vdevs[0] + off, 2)
                if not idx or idx > 64:
                    continue
                base = start + 8 * k - 8 * idx
                if all(m.u(base + 8 * (m.u(v + off, 2) or 0), 8) == p
                       for v, p in zip(vdevs[1:], name_ptr[1:])):
                    return base, off
    return None


_BOOLS = ("vm_running", "broken", "use_disabled_flag", "disabled", "use_started", "started",
          "start_on_kick", "disable_legacy_check", "vhost_started", "use_guest_notifier_mask")


def _note_device_values(m: _Mem, d: _Derivation, vdevs: list[int]) -> None:
    n = len(vdevs)

    def every(fld: str, size: int, test: Callable[[int], bool]) -> bool:
        off = d.offset("VirtIODevice", fld)
        return all((x := m.u(v + off, size)) is not None and test(x) for v in vdevs)

    for fld in _BOOLS:
        ok = every(fld, 1, lambda x: x in (0, 1))
        d.note("VirtIODevice", fld, CHECKED if ok else TEMPLATE,
               f"relative to its group's anchor; 0 or 1 in all {n} devices" if ok
               else "relative to its group's anchor (not 0/1 in every device)")
    sub = _place_features(m, d, vdevs)
    for fld in ("host_features", "guest_features"):
        d.note("VirtIODevice", fld, CHECKED if sub else TEMPLATE,
               f"one of the template's feature words: the one holding the guest word's bits and "
               f"offering VERSION_1 or NOTIFY_ON_EMPTY (host), in all {n} devices{sub}"
               if sub else "relative to vq (the feature words do not tell host from guest)")
    # the virtio status byte (virtio_config.h): DRIVER_OK only after ACKNOWLEDGE and DRIVER,
    # no bit outside ACK|DRIVER|DRIVER_OK|FEATURES_OK|NEEDS_RESET|FAILED
    checks = {
        "status": (1, lambda x: x & ~0xcf == 0 and (not x & 4 or x & 3 == 3),
                   "a virtio status byte (DRIVER_OK only with ACKNOWLEDGE and DRIVER)"),
        "isr": (1, lambda x: x <= 3, "0..3 (the queue and config interrupt bits)"),
        "queue_sel": (2, lambda x: x < d.template.queue_max, "below VIRTIO_QUEUE_MAX"),
        "backend_features": (8, lambda x: True, "a feature word"),
        "bus_name": (8, lambda x: x == 0 or (s := m.cstr(x)) is not None and s.isascii(),
                     "NULL or a string"),
        "dma_as": (8, lambda x: x == 0 or m.ok(x, 8), "NULL or a pointer into the core"),
    }
    for fld, (size, test, what) in checks.items():
        ok = every(fld, size, test)
        d.note("VirtIODevice", fld, CHECKED if ok and fld != "backend_features" else TEMPLATE,
               f"relative to its group's anchor; {what} in all {n} devices" if ok
               else "relative to its group's anchor")


_FEATURES = ("guest_features", "host_features", "backend_features")
# what every QEMU device offers: VIRTIO_F_VERSION_1 (bit 32) on a modern or transitional one,
# VIRTIO_F_NOTIFY_ON_EMPTY (bit 24, DEFINE_VIRTIO_COMMON_FEATURES) on a legacy one (virtio-mmio
# force-legacy, legacy virtio-ccw); Linux acks neither on a legacy device
_OFFERED = 1 << 32 | 1 << 24


def _place_features(m: _Mem, d: _Derivation, vdevs: list[int]) -> str:
    """Which of the template's three feature words is which: releases reorder them (7.2 has
    guest, host, backend; 10.0 host, guest, backend). The host word holds every guest bit and
    offers VIRTIO_F_VERSION_1 or VIRTIO_F_NOTIFY_ON_EMPTY (:data:`_OFFERED`); the assignment that fits every device
    moving the fewest fields wins. Returns ``""`` when nothing tells them apart, else a note."""
    import itertools

    slots = [d.offset("VirtIODevice", f) for f in _FEATURES]
    words = {o: [m.u(v + o, 8) for v in vdevs] for o in slots}
    if any(x is None for w in words.values() for x in w):
        return ""
    fits = []
    for perm in itertools.permutations(slots):
        g, h = words[perm[0]], words[perm[1]]
        # an all-zero word (backend_features without vhost) is inside any other: not a guest's
        if any(g) and all(a & ~b == 0 and b & _OFFERED for a, b in zip(g, h)):
            fits.append((sum(p != o for p, o in zip(perm, slots)), perm))
    if not fits:
        return ""
    fits.sort()
    moved, perm = fits[0]
    same = all(g == h for g, h in zip(words[perm[0]], words[perm[1]]))
    if same or any(p[0] == moved and p[1][:2] != perm[:2] for p in fits[1:]):
        return ""          # two assignments fit equally: the template's order stays unproven
    for f in d.fields("VirtIODevice"):
        if f["name"] in _FEATURES:
            f["offset"] = perm[_FEATURES.index(f["name"])]
    return " (moved from the template's order)" if moved else " (the template's order)"


# --- VirtQueue fields checked against guest RAM ---------------------------------------------------

def _check_queues(m: _Mem, d: _Derivation, arrays: list[tuple[int, int]], guest_ram) -> None:
    lay = d.layout("derived")
    dt, qmax = lay.dtypes["VirtQueue"], lay.queue_max
    rows, packed, big = [], [], []
    gf = d.offset("VirtIODevice", "guest_features")
    endian = d.offset("VirtIODevice", "device_endian")
    for arr, vdev in arrays:
        raw = m.block(arr, qmax * dt.itemsize)
        if raw is not None:
            q = np.frombuffer(raw, dtype=dt)
            rows.append(q[q["vring.num"] != 0])
            # VIRTIO_F_RING_PACKED (bit 34): vring.used is the device event area, no used->idx
            packed += [bool((m.u(vdev + gf, 8) or 0) >> 34 & 1)] * len(rows[-1])
            # a legacy device (no VERSION_1 negotiated) of a big-endian guest (s390x virtio-ccw,
            # whose device_endian is 2 for every device) has big-endian rings
            legacy = not (m.u(vdev + gf, 8) or 0) >> 32 & 1
            big += [legacy and m.u(vdev + endian, 1) == 2] * len(rows[-1])
    q = np.concatenate(rows) if rows else np.zeros(0, dt)
    n = len(q)

    def pow2(x):
        return (x > 0) & ((x & (x - 1)) == 0) & (x <= 32768)

    ok_num = bool(n) and bool(pow2(q["vring.num"]).all() and pow2(q["vring.num_default"]).all())
    for fld in ("vring.num", "vring.num_default"):
        d.note("VirtQueue", fld, CHECKED if ok_num else TEMPLATE,
               f"a power of two in all {n} queues in use" if ok_num else "template place")
    order = bool(n) and bool(((q["vring.desc"] < q["vring.avail"]) | (q["vring.desc"] == 0)).all())
    for fld in ("vring.desc", "vring.avail", "vring.used", "vring.align"):
        d.note("VirtQueue", fld, CHECKED if order else TEMPLATE,
               f"desc below avail in all {n} queues in use" if order else "template place")

    def gpa(addr: int, size: int, swap: bool = False) -> int | None:
        for r in guest_ram:
            if r.gpa <= addr and addr + size <= r.gpa + r.size:
                v = m.u(r.hva + addr - r.gpa, size)
                return int.from_bytes(v.to_bytes(size, "little"), "big") if swap and v is not None \
                    else v
        return None

    # QEMU writes used->idx from vq->used_idx (virtqueue_flush); the guest's avail->idx is at
    # least what QEMU last read into shadow_avail_idx
    seen = [(int(r["used_idx"]), gpa(int(r["vring.used"]) + 2, 2, b))
            for r, p, b in zip(q, packed, big) if r["vring.used"] and not p]
    held = [(a, b) for a, b in seen if b is not None]
    ok_used = bool(held) and all(a == b for a, b in held)
    d.note("VirtQueue", "used_idx", CHECKED if ok_used else TEMPLATE,
           f"equals used->idx in guest RAM for {len(held)} split queues" if ok_used
           else "relative to the struct start (guest RAM not in the core)" if not held
           else "relative to the struct start; differs from used->idx in guest RAM")
    ok_in = bool(n) and bool((((q["last_avail_idx"].astype(np.int64) - q["used_idx"]) % 65536)
                              == q["inuse"]).all())
    for fld in ("last_avail_idx", "inuse"):
        d.note("VirtQueue", fld, CHECKED if ok_in else TEMPLATE,
               f"last_avail_idx - used_idx == inuse in all {n} queues" if ok_in
               else "template place")
    # the guest's avail->idx is at or ahead of what QEMU last read (shadow_avail_idx), which is
    # at or ahead of what it took (last_avail_idx), each by at most the ring's size
    num = q["vring.num"].astype(np.int64)
    shadow, last = q["shadow_avail_idx"].astype(np.int64), q["last_avail_idx"].astype(np.int64)
    avail = [(i, gpa(int(r["vring.avail"]) + 2, 2, big[i])) for i, r in enumerate(q)
             if r["vring.avail"] and not packed[i]]
    held = [(i, a) for i, a in avail if a is not None]
    ok_sh = bool(n) and bool((((shadow - last) % 65536) <= num).all()) and all(
        (a - int(shadow[i])) % 65536 <= int(num[i]) for i, a in held)
    d.note("VirtQueue", "shadow_avail_idx", CHECKED if ok_sh else TEMPLATE,
           f"between last_avail_idx and the guest's avail->idx in all {n} queues "
           f"({len(held)} read in guest RAM)" if ok_sh else "relative to the struct start")
    used = q["used_idx"].astype(np.int64)
    ok_sig = bool(n) and bool((((used - q["signalled_used"].astype(np.int64)) % 65536)
                               <= num).all())
    d.note("VirtQueue", "signalled_used", CHECKED if ok_sig else TEMPLATE,
           f"at most a ring's size behind used_idx in all {n} queues" if ok_sig
           else "relative to the struct start")
    for fld in ("signalled_used_valid", "notification"):
        ok = bool(n) and bool(np.isin(q[fld], (0, 1)).all())
        d.note("VirtQueue", fld, CHECKED if ok else TEMPLATE,
               f"relative to the struct start; 0 or 1 in all {n} queues" if ok
               else "relative to the struct start")


# --- vhost ---------------------------------------------------------------------------------------

def _derive_vhost(m: _Mem, d: _Derivation, vdevs: list[int], heap: list[tuple[int, int]]) -> None:
    """``vhost_virtqueue``'s size and ``dev`` from ``vqs[i].dev == hdev`` (``vhost_virtqueue_init``
    sets it at realize, started or not): the ``vhost_dev`` of a started device (``hdev->vdev``),
    or one embedded in a device object (vhost-user-blk, vhost-user-fs ... hold theirs)."""
    from vdecode.sources.qemu_core.memory import find_pointers

    started = [v for v in vdevs
               if m.u(v + d.offset("VirtIODevice", "vhost_started"), 1) == 1]
    t_vqs, t_nvqs = d.t_off("vhost_dev", "vqs"), d.t_off("vhost_dev", "nvqs")
    cands: list[tuple[int, str]] = []
    if started:
        cands += [(h, "the vhost_dev of a started device") for h in find_pointers(
            m.mem, heap, started[:1], d.t_off("vhost_dev", "vdev"))[started[0]]]
    for v in vdevs:                      # a vhost_dev inside the device's own object
        obj = m.block(v, EMBEDDED_SCAN) or b""
        words = np.frombuffer(obj[:len(obj) // 8 * 8], "<u8")
        for k in range(0, len(words) - (t_vqs + 8) // 8):
            h = v + 8 * k
            if words[k + t_vqs // 8] and 2 <= (m.u(h + t_nvqs, 4) or 0) <= 1024:
                cands.append((h, "a vhost_dev inside a device's object"))
    for h, what in cands:
        found = _vhost_stride(m, d, h, m.u(h + t_vqs, 8) or 0, m.u(h + t_nvqs, 4) or 0)
        if found:
            size, dev, nvqs = found
            d.move_group("vhost_virtqueue", {"dev": dev}, head_fixed=True)
            d.data["structs"]["vhost_virtqueue"]["size"] = size
            how = f"vqs[0..{nvqs - 1}].dev == {what} at {h:#x}"
            d.note("vhost_virtqueue", "dev", ANCHORED, how)
            d.evidence["vhost_virtqueue.size"] = {"offset": size, "confidence": ANCHORED,
                                                  "evidence": how}
            for f in ("vqs", "nvqs"):
                d.note("vhost_dev", f, CHECKED, "template place; leads to vhost_virtqueues "
                                                "pointing back")
            break
    for struct in ("vhost_dev", "vhost_virtqueue"):
        for f in d.fields(struct):
            if f"{struct}.{f['name']}" not in d.evidence:
                d.note(struct, f["name"], TEMPLATE,
                       "template place; relative to vqs and dev" if cands else
                       "template place; no vhost device in the core to check it on")


def _vhost_stride(m: _Mem, d: _Derivation, hdev: int, vqs: int, nvqs: int
                  ) -> tuple[int, int, int] | None:
    """``(size, dev offset, nvqs)`` when ``vqs[0..nvqs-1]`` at some stride all point back."""
    t_dev = d.t_off("vhost_virtqueue", "dev")
    t_size = d.template.sizes["vhost_virtqueue"]
    if not vqs or not 2 <= nvqs <= 1024 or not m.ok(vqs, 8):
        return None
    for size in sorted(range(max(16, t_size - 8 * STRIDE_SPAN), t_size + 8 * STRIDE_SPAN + 1, 8),
                       key=lambda x: abs(x - t_size)):
        for dev in sorted(range(0, size, 8), key=lambda x: abs(x - t_dev)):
            if all(m.u(vqs + i * size + dev, 8) == hdev for i in range(nvqs)):
                return size, dev, nvqs
    return None


# --- how devices are listed ----------------------------------------------------------------------

def _derive_discovery(mem: HostMemory, d: _Derivation, vdevs: list[int],
                      binary_span: tuple[int, int], names: dict[int, str]) -> None:
    """``virtio_list`` (QEMU ≤ 8.1) when its links (each ``tql_prev`` pointing at the link before)
    walk from a device to a head outside the devices (in the binary's ``.bss``) and hold every
    device; else the QOM composition tree (8.2+), when it holds every device."""
    from vdecode.errors import VdecodeError
    from vdecode.sources.qemu_core.devices import walk_virtio_list
    from vdecode.sources.qemu_core.qom import find_qom_root, walk_qom_tree

    if not vdevs:
        d.data["device_discovery"] = "qom-tree"
        return
    rd = CoreReader(mem, d.layout("derived"), names)
    try:
        head, order = walk_virtio_list(rd, vdevs[0], binary_span)
        if set(vdevs) <= set(order):
            d.data["device_discovery"] = "virtio_list"
            for f in ("next.tqe_next", "next.tqe_circ.tql_prev"):
                d.note("VirtIODevice", f, CHECKED,
                       f"virtio_list walks from its head in the binary's data through all "
                       f"{len(vdevs)} devices")
            return
    except VdecodeError:
        pass
    try:
        objs = set(walk_qom_tree(rd, find_qom_root(rd, vdevs[0])))
    except VdecodeError as err:
        raise _fail(mem.name, f"neither virtio_list nor the QOM tree lists the devices: "
                              f"{err.reason}") from err
    if not set(vdevs) <= objs:
        raise _fail(mem.name, "neither virtio_list nor the QOM tree lists every device")
    d.data["device_discovery"] = "qom-tree"
    how = f"the QOM tree from /machine's root reaches all {len(vdevs)} devices"
    for f in ("parent", "properties"):
        d.note("Object", f, CHECKED, how)
    for f in ("type", "opaque"):
        d.note("ObjectProperty", f, CHECKED, how)
    for f in ("size", "nnodes", "hashes", "values"):
        d.note("GHashTable", f, CHECKED, how + " (GHashTable.nnodes == used slots in each table)")
    for f in ("next.tqe_next", "next.tqe_circ.tql_prev"):
        d.note("VirtIODevice", f, TEMPLATE, "not used: no virtio_list in this build")

"""
QEMU process cores: QEMU's own structs, found by invariants
-----------------------------------------------------------
Reads a core of ``qemu-system-*`` (gdb's ``gcore``, systemd-coredump) through its host-virtual
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
- a ``RAMBlock`` named ``pc.ram``/``pc.bios``/``pc.rom`` has ``mr->ram_block`` pointing back at it,
  and its ``next`` links lead through the whole ``ram_list.blocks``.

Every pointer is checked against the core's mappings before it is followed. This module never
builds address spaces: the caller passes the host-virtual memory (``vdecode.space.qemu_core``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np
from construct import (Bytes, BytesInteger, ConstructError, Flag, Int8sl, Int8ul, Int16sl,
                       Int16ul, Int32sl, Int32ul, Int64sl, Int64ul, Padding, Struct)

from vdecode.errors import CorruptInput, MissingData, UnsupportedInput
from vdecode.sources.elf_dump import NT_FILE, ElfFacts, ElfLayouts, read_note_desc
from vdecode.sources.files import FileView
from vdecode.sources.qemu_state import (QemuVirtioState, VhostDev, VhostVirtqueue,
                                        VirtIODeviceState, VirtQueueState)

__all__ = ("HostMemory", "MappedFile", "QemuLayout", "RamBlockFacts", "GuestRamRun",
           "QemuCoreFacts", "read_mapped_files", "read_qemu_core", "load_layout")

PF_W = 2
MAX_STRING = 4096
MAX_DEVICES = 4096
MAX_RAMBLOCKS = 4096
NT_GNU_BUILD_ID = 3


class HostMemory(Protocol):
    """QEMU's host-virtual memory as the core holds it (a ``SegmentedSpace`` by ``p_vaddr``)."""

    name: str

    def read(self, addr: int, n: int) -> bytes | memoryview: ...

    def is_present(self, addr: int, n: int) -> bool: ...

    def mapping(self, addr: int, n: int) -> Iterator[tuple[int, int, int | None]]: ...


# --- the layout profile ----------------------------------------------------------------------

_SCALARS = {"u8": Int8ul, "u16": Int16ul, "u32": Int32ul, "u64": Int64ul, "i8": Int8sl,
            "i16": Int16sl, "i32": Int32sl, "i64": Int64sl, "ptr": Int64ul, "bool": Flag,
            "i128": BytesInteger(16, signed=True, swapped=True),
            "u128": BytesInteger(16, signed=False, swapped=True)}
_NP = {"u8": "<u1", "u16": "<u2", "u32": "<u4", "u64": "<u8", "i8": "<i1", "i16": "<i2",
       "i32": "<i4", "i64": "<i8", "ptr": "<u8", "bool": "<u1"}


class QemuLayout:
    """One build's struct layouts, declared with construct (and numpy for arrays) from profile data.

    :param data: the parsed ``layout-<arch>.json``.
    :param source: the profile's file name, named in every mismatch message.
    :raises CorruptInput: when the profile contradicts itself (overlapping or oversized fields).
    """

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data, self.source = data, source
        self.build_ids = [b.lower() for b in data.get("build_ids", [])]
        self.queue_max = int(data.get("virtio_queue_max", 1024))
        self.device_names = {int(k): v for k, v in data.get("virtio_device_names", {}).items()}
        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, dict[str, int]] = {}
        self.structs: dict[str, Struct] = {}
        self.dtypes: dict[str, np.dtype] = {}
        for name, body in data["structs"].items():
            fields = sorted(body["fields"], key=lambda f: f["offset"])
            size = int(body["size"])
            parts, pos = [], 0
            for f in fields:
                off, fsize, ftype = int(f["offset"]), int(f["size"]), f["type"]
                if off < pos or off + fsize > size:
                    raise CorruptInput(source, f"struct {name}: field {f['name']} at {off}+{fsize} "
                                               f"overlaps the one before or passes the size {size}")
                if off > pos:
                    parts.append(Padding(off - pos))
                parts.append(f["name"] / self._construct(ftype, fsize, source, name))
                pos = off + fsize
            if size > pos:
                parts.append(Padding(size - pos))
            self.structs[name] = Struct(*parts)
            self.sizes[name] = size
            self.offsets[name] = {f["name"]: int(f["offset"]) for f in fields}
            np_fields = [(f["name"], _NP[f["type"]], int(f["offset"])) for f in fields
                         if f["type"] in _NP]
            self.dtypes[name] = np.dtype({"names": [x[0] for x in np_fields],
                                          "formats": [x[1] for x in np_fields],
                                          "offsets": [x[2] for x in np_fields], "itemsize": size})

    @staticmethod
    def _construct(ftype: str, size: int, source: str, struct: str):
        if ftype in _SCALARS:
            return _SCALARS[ftype]
        m = re.fullmatch(r"(?:char|bytes)\[(\d+)\]", ftype)
        if m and int(m.group(1)) == size:
            return Bytes(size)
        raise CorruptInput(source, f"struct {struct}: unknown field type {ftype!r}")

    def off(self, struct: str, fld: str) -> int:
        return self.offsets[struct][fld]

    @property
    def label(self) -> str:
        return f"profile {self.source} (QEMU {self.data.get('qemu', '?')}, {self.data.get('package', '?')})"


def load_layout(arch: str = "x86_64", version: str | None = None) -> QemuLayout:
    """The shipped layout profile ``formats/qemu-<version>/layout-<arch>.json``."""
    from vdecode.profiles import load_profile

    prof = load_profile(version)
    name = f"layout-{arch}"
    return QemuLayout(prof.table(name), f"formats/qemu-{prof.version}/{name}.json")


# --- facts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MappedFile:
    """One ``NT_FILE`` entry: ``[start, end)`` maps ``path`` from byte ``file_offset``."""

    start: int
    end: int
    file_offset: int
    path: str


@dataclass(frozen=True)
class RamBlockFacts:
    """A ``RAMBlock``: ``idstr``, ``host`` (Hva), ``offset`` (ram_addr_t), lengths, its ``mr``."""

    addr: int
    idstr: str
    host: int
    offset: int
    used_length: int
    max_length: int
    mr: int


@dataclass(frozen=True)
class GuestRamRun:
    """Guest-physical ``[gpa, gpa+size)`` is ``block``'s host memory at ``hva``."""

    gpa: int
    size: int
    hva: int
    block: str
    region: str          # the MemoryRegion that maps it (``ram-below-4g``, ``pc.bios`` …)


@dataclass
class QemuCoreFacts:
    state: QemuVirtioState
    binary: str
    build_id: str | None
    ram_blocks: list[RamBlockFacts] = field(default_factory=list)
    guest_ram: list[GuestRamRun] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


# --- reading helpers -------------------------------------------------------------------------

class _Reader:
    """Pointer-checked reads of host memory; every failure names the core and the address."""

    def __init__(self, mem: HostMemory, layout: QemuLayout) -> None:
        self.mem, self.layout, self.name = mem, layout, mem.name

    def file_offset(self, addr: int) -> int | None:
        try:
            for _, _, off in self.mem.mapping(addr, 1):
                return off
        except MissingData:
            return None
        return None

    def valid(self, addr: int, n: int) -> bool:
        return addr != 0 and addr % 1 == 0 and self.mem.is_present(addr, n)

    def read(self, addr: int, n: int, what: str) -> bytes | memoryview:
        if addr == 0:
            raise CorruptInput(self.name, f"{what}: NULL pointer")
        try:
            return self.mem.read(addr, n)
        except MissingData as err:
            raise MissingData(self.name, f"{what} at host-virtual {addr:#x}+{n} is not in the "
                                         f"core") from err

    def struct(self, name: str, addr: int, what: str):
        size = self.layout.sizes[name]
        data = self.read(addr, size, what)
        try:
            return self.layout.structs[name].parse(data)
        except ConstructError as err:          # fixed-size scalars: only on a broken profile
            raise CorruptInput(self.name, f"{what} ({name}): {err}",
                               offset=self.file_offset(addr)) from err

    def cstring(self, addr: int, what: str, limit: int = MAX_STRING) -> str:
        """A NUL-terminated string at ``addr`` (read up to the end of its run)."""
        if addr == 0:
            raise CorruptInput(self.name, f"{what}: NULL pointer")
        buf = b""
        pos = addr
        while len(buf) < limit:
            chunk_n = min(256, limit - len(buf))
            try:
                chunk = bytes(self.mem.read(pos, chunk_n))
            except MissingData:
                chunk = b""
                for n in (64, 16, 1):
                    if self.mem.is_present(pos, n):
                        chunk = bytes(self.mem.read(pos, n))
                        break
                if not chunk:
                    raise MissingData(self.name, f"{what}: string at host-virtual {addr:#x} is "
                                                 f"not in the core")
            nul = chunk.find(b"\0")
            if nul >= 0:
                return (buf + chunk[:nul]).decode("utf-8", "backslashreplace")
            buf += chunk
            pos += len(chunk)
        raise CorruptInput(self.name, f"{what}: string at host-virtual {addr:#x} has no NUL in "
                                      f"{limit} bytes", offset=self.file_offset(addr))


def _mismatch(layout: QemuLayout, mem: HostMemory, check: str, detail: str,
              offset: int | None = None) -> CorruptInput:
    return CorruptInput(mem.name, f"{layout.label} does not fit this core: check {check!r} "
                                  f"failed: {detail}", offset=offset)


# --- NT_FILE, the binary, its build-id, the version --------------------------------------------

def read_mapped_files(view: FileView, elf: ElfFacts) -> list[MappedFile]:
    """The ``CORE``/``NT_FILE`` note: every file-backed mapping of the process.

    Layout (linux ``fs/binfmt_elf.c`` ``fill_files_note``): ``count``, ``page_size``, then
    ``count`` × (``start``, ``end``, ``file_ofs`` in pages), then ``count`` NUL-terminated paths.

    :raises CorruptInput: when the note contradicts its own size.
    """
    notes = elf.find_notes("CORE", NT_FILE)
    if not notes:
        return []
    note = notes[0]
    desc = bytes(read_note_desc(view, note))
    word = 8 if elf.is64 else 4
    dt = np.dtype("<u8" if word == 8 else "<u4")
    if len(desc) < 2 * word:
        raise CorruptInput(view.name, "NT_FILE note shorter than its header", offset=note.desc_offset)
    count, page_size = (int(x) for x in np.frombuffer(desc[:2 * word], dtype=dt))
    table_end = 2 * word + 3 * word * count
    if count > 1 << 20 or table_end > len(desc):
        raise CorruptInput(view.name, f"NT_FILE note: {count} entries do not fit in "
                                      f"{len(desc)} bytes", offset=note.desc_offset)
    table = np.frombuffer(desc[2 * word:table_end], dtype=dt).reshape(count, 3)
    names = desc[table_end:].split(b"\0")
    if len(names) < count:
        raise CorruptInput(view.name, f"NT_FILE note: {len(names)} paths for {count} entries",
                           offset=note.desc_offset)
    return [MappedFile(int(s), int(e), int(o) * page_size,
                       names[i].decode("utf-8", "backslashreplace"))
            for i, (s, e, o) in enumerate(table.tolist())]


def find_qemu_binary(mem: HostMemory, files: list[MappedFile]) -> tuple[str, int, int]:
    """The ``qemu-system-*`` executable's path, load base and end of its mappings.

    :raises UnsupportedInput: when no mapped file is a ``qemu-system-*`` binary.
    """
    cands = [f for f in files if f.path.rsplit("/", 1)[-1].startswith("qemu-system-")]
    if not cands:
        if not files:
            raise UnsupportedInput(mem.name, "not a QEMU process core: no NT_FILE note names a "
                                             "qemu-system-* binary")
        raise UnsupportedInput(mem.name, f"not a QEMU process core: none of its {len(files)} mapped "
                                         f"files is a qemu-system-* binary (first: {files[0].path})")
    path = cands[0].path
    mine = [f for f in files if f.path == path]
    base = min(f.start - f.file_offset for f in mine)
    return path, base, max(f.end for f in mine)


def read_build_id(rd: _Reader, base: int) -> str | None:
    """The GNU build-id of the ELF image mapped at ``base`` (its ``PT_NOTE`` in memory)."""
    lay = ElfLayouts(True, True)
    if not rd.valid(base, 64) or bytes(rd.read(base, 4, "binary ELF header")) != b"\x7fELF":
        return None
    eh = lay.ehdr.parse(bytes(rd.read(base, 64, "binary ELF header")))
    n = eh.e_phnum * lay.phdr_dtype.itemsize
    if eh.e_phnum > 256 or not rd.valid(base + eh.e_phoff, n):
        return None
    phdrs = np.frombuffer(bytes(rd.read(base + eh.e_phoff, n, "binary program headers")),
                          dtype=lay.phdr_dtype)
    for ph in phdrs[phdrs["p_type"] == 4]:
        addr, size = base + int(ph["p_vaddr"]), int(ph["p_filesz"])
        if size > 1 << 16 or not rd.valid(addr, size):
            continue
        data, pos = bytes(rd.read(addr, size, "binary notes")), 0
        while pos + 12 <= size:
            namesz, descsz, ntype = np.frombuffer(data[pos:pos + 12], "<u4").tolist()
            name_at = pos + 12
            desc_at = name_at + ((namesz + 3) & ~3)
            if data[name_at:name_at + namesz].rstrip(b"\0") == b"GNU" and ntype == NT_GNU_BUILD_ID:
                return data[desc_at:desc_at + descsz].hex()
            pos = desc_at + ((descsz + 3) & ~3)
    return None


_VERSION = re.compile(rb"QEMU emulator version (\d+)\.(\d+)\.(\d+)(?: \(([^()\x00\n]{1,120})\))?\n")


def find_qemu_version(mem: HostMemory, runs: list[tuple[int, int]]) -> tuple[tuple[int, int, int] | None, str | None]:
    """``(major, minor, micro)`` and the package string from ``--version``'s text in the binary."""
    for start, size in runs:
        m = _VERSION.search(mem.read(start, size))
        if m:
            pkg = m.group(4).decode("utf-8", "replace") if m.group(4) else None
            return (int(m.group(1)), int(m.group(2)), int(m.group(3))), pkg
    return None, None


# --- scanning --------------------------------------------------------------------------------

def _scan_runs(mem: HostMemory, runs: list[tuple[int, int]]) -> Iterator[tuple[int, memoryview]]:
    for start, size in runs:
        data = mem.read(start, size)
        yield start, (data if isinstance(data, memoryview) else memoryview(data))


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
    for start, mv in _scan_runs(mem, runs):
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


def find_pointers(mem: HostMemory, runs: list[tuple[int, int]], values: list[int],
                  field_offset: int) -> dict[int, list[int]]:
    """For each pointer value, the addresses of structs whose field at ``field_offset`` holds it."""
    out: dict[int, list[int]] = {v: [] for v in values}
    if field_offset % 8:
        raise UnsupportedInput(mem.name, "pointer scan needs an 8-byte-aligned field")
    want = np.array(sorted(set(values)), dtype="<u8")
    for start, mv in _scan_runs(mem, runs):
        n8 = len(mv) // 8
        w64 = np.frombuffer(mv[:n8 * 8], dtype="<u8")
        for v in want:
            for k in np.flatnonzero(w64 == v).tolist():
                out[int(v)].append(start + k * 8 - field_offset)
    return out


# --- virtio devices --------------------------------------------------------------------------

def read_virtqueues(rd: _Reader, vq_hva: int, vdev_hva: int) -> np.ndarray:
    """The device's ``VirtQueue[VIRTIO_QUEUE_MAX]`` as one structured array, checked."""
    lay = rd.layout
    n = lay.queue_max
    dt = lay.dtypes["VirtQueue"]
    raw = rd.read(vq_hva, n * dt.itemsize, f"VirtQueue array of VirtIODevice {vdev_hva:#x}")
    arr = np.frombuffer(raw, dtype=dt)
    bad = np.flatnonzero(arr["queue_index"] != np.arange(n))
    if bad.size:
        i = int(bad[0])
        raise _mismatch(lay, rd.mem, "VirtQueue[i].queue_index == i",
                        f"vq[{i}] of VirtIODevice {vdev_hva:#x} at {vq_hva:#x} has queue_index "
                        f"{int(arr['queue_index'][i])}", rd.file_offset(vq_hva + i * dt.itemsize))
    bad = np.flatnonzero(arr["vdev"] != vdev_hva)
    if bad.size:
        i = int(bad[0])
        raise _mismatch(lay, rd.mem, "VirtQueue[i].vdev == device",
                        f"vq[{i}] at {vq_hva + i * dt.itemsize:#x} points at {int(arr['vdev'][i]):#x}, "
                        f"not VirtIODevice {vdev_hva:#x}", rd.file_offset(vq_hva + i * dt.itemsize))
    return arr


def _printable(s: str) -> bool:
    return bool(s) and all(32 <= ord(c) < 127 for c in s)


def read_device(rd: _Reader, vdev_hva: int) -> tuple[VirtIODeviceState, Any]:
    """One ``VirtIODevice`` with its queues, every field as QEMU held it."""
    lay = rd.layout
    what = f"VirtIODevice at {vdev_hva:#x}"
    d = rd.struct("VirtIODevice", vdev_hva, what)
    ds = rd.struct("DeviceState", vdev_hva, what)
    known = lay.device_names.get(d["device_id"])
    if rd.valid(d["name"], 1):
        name = rd.cstring(d["name"], f"{what}: name")
        if known is not None and name != known:
            raise _mismatch(lay, rd.mem, "VirtIODevice.name == virtio_device_names[device_id]",
                            f"{what}: name {name[:40]!r}, device_id {d['device_id']}",
                            rd.file_offset(vdev_hva))
    elif known is not None:
        name = known          # .rodata is not in the core: check_device_names() checks the pointer
    else:
        raise _mismatch(lay, rd.mem, "VirtIODevice.device_id names a device",
                        f"{what}: device_id {d['device_id']} is not in virtio_device_names[] and "
                        f"the name string at {d['name']:#x} is not in the core",
                        rd.file_offset(vdev_hva))
    path = rd.cstring(ds["canonical_path"], f"{what}: canonical_path")
    if not path.startswith("/machine/") and not path.startswith("/objects/"):
        raise _mismatch(lay, rd.mem, "DeviceState.canonical_path starts /machine/",
                        f"{what}: canonical_path {path[:60]!r}", rd.file_offset(vdev_hva))
    if not ds["realized"]:
        raise _mismatch(lay, rd.mem, "DeviceState.realized on virtio_list",
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
            notification=bool(q["notification"]))
        st.provenance = {k: "core" for k in st.__dataclass_fields__ if k not in ("queue_index", "provenance")}
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
        absent_queues={i for i in range(lay.queue_max) if not nonzero[i]})
    dev.provenance = {k: "core" for k in dev.__dataclass_fields__
                      if k not in ("canonical_path", "queues", "absent_queues", "provenance")}
    return dev, d


def _is_device(rd: _Reader, addr: int) -> bool:
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


def walk_virtio_list(rd: _Reader, any_vdev: int, binary: tuple[int, int]) -> tuple[int, list[int]]:
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
        raise _mismatch(lay, rd.mem, "VirtIODevice.vq points back at its VirtQueue array",
                        f"device {any_vdev:#x}", rd.file_offset(any_vdev))
    cur, seen = any_vdev, set()
    for _ in range(MAX_DEVICES):
        seen.add(cur)
        prev_link = link(cur, prv, f"virtio_list tql_prev of {cur:#x}")
        cand = prev_link - nxt
        if prev_link == 0:
            raise _mismatch(lay, rd.mem, "virtio_list tql_prev != NULL", f"device {cur:#x}")
        if cand in seen:
            raise _mismatch(lay, rd.mem, "virtio_list links", f"tql_prev of {cur:#x} loops")
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
            raise _mismatch(lay, rd.mem, "virtio_list tql_prev == previous link",
                            f"device {at:#x}", rd.file_offset(at))
        order.append(at)
        expect_prev = at + nxt
        at = link(at, nxt, "virtio_list tqe_next")
    if any_vdev not in order:
        raise _mismatch(lay, rd.mem, "virtio_list holds the device", f"{any_vdev:#x} not reached")
    return head, order


def check_device_names(rd: _Reader, raw: list[Any], runs: list[tuple[int, int]]) -> int | None:
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
    raise _mismatch(rd.layout, rd.mem, "VirtIODevice.name == virtio_device_names[device_id]",
                    f"no pointer array in the binary's data has every device's name at its "
                    f"device_id ({len(hits)} candidates for device_id {first['device_id']})")


def find_vhost_dev(rd: _Reader, vdev_hva: int, runs: list[tuple[int, int]]) -> VhostDev | None:
    """The ``vhost_dev`` that ``get_vhost`` would return: ``hdev->vdev == vdev``, lowest ``vq_index``."""
    lay = rd.layout
    hits = find_pointers(rd.mem, runs, [vdev_hva], lay.off("vhost_dev", "vdev"))[vdev_hva]
    best = None
    for h in hits:
        if not rd.valid(h, lay.sizes["vhost_dev"]):
            continue
        hd = rd.struct("vhost_dev", h, f"vhost_dev at {h:#x}")
        nvqs = hd["nvqs"]
        if not (0 < nvqs <= lay.queue_max) or not (0 <= hd["vq_index"] < lay.queue_max):
            continue
        if not rd.valid(hd["vqs"], nvqs * lay.sizes["vhost_virtqueue"]):
            continue
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
    return VhostDev(n_mem_sections=hd["n_mem_sections"], n_tmp_sections=hd["n_tmp_sections"],
                    nvqs=hd["nvqs"], vq_index=hd["vq_index"], features=hd["features"],
                    acked_features=hd["acked_features"], backend_features=hd["backend_features"],
                    protocol_features=hd["protocol_features"], max_queues=hd["max_queues"],
                    backend_cap=hd["backend_cap"], log_enabled=hd["log_enabled"],
                    log_size=hd["log_size"], vqs=vqs)


# --- RAM -------------------------------------------------------------------------------------

_RAM_ANCHOR = re.compile(rb"pc\.(?:ram|bios|rom)\x00")


def _read_ramblock(rd: _Reader, addr: int) -> RamBlockFacts | None:
    lay = rd.layout
    if not rd.valid(addr, lay.sizes["RAMBlock"]):
        return None
    rb = rd.struct("RAMBlock", addr, f"RAMBlock at {addr:#x}")
    idstr = bytes(rb["idstr"]).split(b"\0", 1)[0].decode("utf-8", "replace")
    if not _printable(idstr) or not rd.valid(rb["mr"], lay.sizes["MemoryRegion"]):
        return None
    if not 0 < rb["used_length"] <= rb["max_length"]:
        return None
    mr = rd.struct("MemoryRegion", rb["mr"], f"MemoryRegion of RAMBlock {idstr}")
    if mr["ram_block"] != addr:
        return None
    return RamBlockFacts(addr, idstr, rb["host"], rb["offset"], rb["used_length"],
                         rb["max_length"], rb["mr"])


def find_ram_blocks(rd: _Reader, runs: list[tuple[int, int]], binary: tuple[int, int]) -> list[RamBlockFacts]:
    """``ram_list.blocks`` in list order, found from a ``pc.*`` block by its ``idstr``."""
    lay = rd.layout
    idoff = lay.off("RAMBlock", "idstr")
    nxt, prv = lay.off("RAMBlock", "next.le_next"), lay.off("RAMBlock", "next.le_prev")
    start = None
    for base, mv in _scan_runs(rd.mem, runs):
        for m in _RAM_ANCHOR.finditer(mv):
            cand = base + m.start() - idoff
            if cand % 8 == 0 and _read_ramblock(rd, cand):
                start = cand
                break
        if start is not None:
            break
    if start is None:
        return []

    def word(addr: int) -> int:
        return int(np.frombuffer(bytes(rd.read(addr, 8, "RAMBlock link")), "<u8")[0])

    cur = start
    for _ in range(MAX_RAMBLOCKS):                        # back to the list head
        le_prev = word(cur + prv)
        if binary[0] <= le_prev < binary[1] or _read_ramblock(rd, le_prev - nxt) is None:
            head = le_prev
            break
        cur = le_prev - nxt
    else:
        raise CorruptInput(rd.name, f"ram_list.blocks: more than {MAX_RAMBLOCKS} blocks")
    out, at = [], word(head)
    while at:
        if len(out) >= MAX_RAMBLOCKS or any(b.addr == at for b in out):
            raise CorruptInput(rd.name, f"ram_list.blocks: loop at {at:#x}")
        b = _read_ramblock(rd, at)
        if b is None:
            raise _mismatch(lay, rd.mem, "RAMBlock.mr->ram_block == block", f"RAMBlock at {at:#x}",
                            rd.file_offset(at))
        out.append(b)
        at = word(at + nxt)
    return out


def _mr_name(rd: _Reader, addr: int) -> str:
    """A ``MemoryRegion``'s name, or ``""`` when it is NULL or not in the core (names only label)."""
    try:
        return rd.cstring(addr, "MemoryRegion name", limit=256) if addr else ""
    except (MissingData, CorruptInput):
        return ""


def _mr_chain(rd: _Reader, mr_addr: int) -> tuple[int, str, bool] | None:
    """``(address in the root, root name, all enabled)`` following ``container`` up to a root."""
    lay = rd.layout
    total, enabled, at = 0, True, mr_addr
    for _ in range(64):
        if not rd.valid(at, lay.sizes["MemoryRegion"]):
            return None
        mr = rd.struct("MemoryRegion", at, f"MemoryRegion at {at:#x}")
        enabled = enabled and mr["enabled"]
        if not mr["container"]:
            return total, _mr_name(rd, mr["name"]), enabled
        total += mr["addr"]
        at = mr["container"]
    return None


def map_guest_ram(rd: _Reader, blocks: list[RamBlockFacts],
                  runs: list[tuple[int, int]]) -> list[GuestRamRun]:
    """Guest-physical runs of RAM in the ``system`` address space.

    Each block's own region where it sits in ``system`` (``pc.bios``), and every enabled alias
    of it there (``ram-below-4g``, ``ram-above-4g`` of ``pc.ram``). Where two overlap, the bigger
    mapping wins (``ram-below-4g`` over ``isa-bios``, ``pc.rom``, PAM and SMRAM windows, which
    QEMU's priorities hide or which alias the same bytes).
    """
    lay = rd.layout
    by_mr = {b.mr: b for b in blocks}
    cands: list[GuestRamRun] = []
    for b in blocks:
        chain = _mr_chain(rd, b.mr)
        if chain and chain[1] == "system" and chain[2]:
            name = _mr_name(rd, rd.struct("MemoryRegion", b.mr, "MemoryRegion")["name"])
            cands.append(GuestRamRun(chain[0], b.used_length, b.host, b.idstr, name))
    aliases = find_pointers(rd.mem, runs, list(by_mr), lay.off("MemoryRegion", "alias"))
    for target, hits in aliases.items():
        b = by_mr[target]
        for a in hits:
            if not rd.valid(a, lay.sizes["MemoryRegion"]):
                continue
            mr = rd.struct("MemoryRegion", a, f"MemoryRegion at {a:#x}")
            size = mr["size"]
            if not mr["name"] or not rd.valid(mr["name"], 1) or size <= 0 or \
                    mr["alias_offset"] + size > b.max_length:
                continue
            chain = _mr_chain(rd, a)
            if not chain or chain[1] != "system" or not chain[2]:
                continue
            name = _mr_name(rd, mr["name"])
            cands.append(GuestRamRun(chain[0], int(size), b.host + mr["alias_offset"], b.idstr, name))
    cands.sort(key=lambda r: (-r.size, r.gpa))
    taken: list[GuestRamRun] = []
    for r in cands:
        if all(r.gpa + r.size <= t.gpa or t.gpa + t.size <= r.gpa for t in taken):
            taken.append(r)
    return sorted(taken, key=lambda r: r.gpa)


# --- everything --------------------------------------------------------------------------------

def read_qemu_core(view: FileView, elf: ElfFacts, mem: HostMemory, layout: QemuLayout, *,
                   check_build_id: bool = True) -> QemuCoreFacts:
    """QEMU's virtio state, RAM blocks and guest RAM map from a process core.

    :param mem: the core's host-virtual memory (by ``p_vaddr``).
    :param layout: the layout profile; its ``build_ids`` must name the core's binary.
    :raises UnsupportedInput: not a QEMU core, or a build the profile is not for.
    :raises CorruptInput: an invariant of the profile fails on this core (the message names the
        profile and the check).
    :raises MissingData: a struct the answer needs is not in the core.
    """
    rd = _Reader(mem, layout)
    files = read_mapped_files(view, elf)
    binary, base, end = find_qemu_binary(mem, files)
    build_id = read_build_id(rd, base)
    if check_build_id and layout.build_ids and build_id not in layout.build_ids:
        raise UnsupportedInput(view.name, f"{layout.label} does not fit this core: check 'build-id' "
                                          f"failed: {binary} has build-id {build_id or 'unknown'}, "
                                          f"the profile is for {', '.join(layout.build_ids)}")
    bin_runs = [(f.start, f.end - f.start) for f in files
                if f.path == binary and mem.is_present(f.start, f.end - f.start)]
    version, package = find_qemu_version(mem, bin_runs)
    version_from = "core"
    if version is None and build_id in layout.build_ids and "qemu" in layout.data:
        # .rodata is not in the core; the build-id pins the release the profile names
        version = tuple(int(x) for x in layout.data["qemu"].split("."))[:3]  # type: ignore[assignment]
        package, version_from = layout.data.get("package"), "profile"

    loads = elf.loads
    writable = [(int(a), int(n)) for a, n, fs, fl in zip(loads["p_vaddr"], loads["p_memsz"],
                                                        loads["p_filesz"], loads["p_flags"])
                if fl & PF_W and fs == n and n > 0]
    binary_span = (base, end)
    blocks = find_ram_blocks(rd, writable, binary_span)
    guest_hva = [(b.host, b.max_length) for b in blocks]
    heap = [(a, n) for a, n in writable
            if not any(h <= a < h + m for h, m in guest_hva)]
    guest_ram = map_guest_ram(rd, blocks, heap) if blocks else []

    arrays = find_virtqueue_arrays(mem, layout, heap)
    if not arrays:
        raise _mismatch(layout, mem, "VirtQueue arrays exist",
                        "no VirtQueue[VIRTIO_QUEUE_MAX] array (queue_index 0,1,2 with one vdev) "
                        "in the core's writable memory")
    state = QemuVirtioState(qemu_version=version, package=package, source="core")
    array_of = {}
    for arr, vdev in arrays:
        if rd.valid(vdev, layout.sizes["VirtIODevice"]):
            array_of.setdefault(vdev, arr)
    if not array_of:
        raise _mismatch(layout, mem, "VirtQueue.vdev points at a device",
                        f"{len(arrays)} arrays, none with a readable vdev")
    head, order = walk_virtio_list(rd, next(iter(array_of)), binary_span)
    raws = []
    for vdev in order:
        dev, raw = read_device(rd, vdev)
        raws.append(raw)
        if vdev in array_of and raw["vq"] != array_of[vdev]:
            raise _mismatch(layout, mem, "VirtIODevice.vq == its VirtQueue array",
                            f"{dev.canonical_path}: vq {raw['vq']:#x}, array at {array_of[vdev]:#x}",
                            rd.file_offset(vdev))
        if dev.vhost_started:
            dev.vhost_dev = find_vhost_dev(rd, vdev, heap)
        state.devices.append(dev)
    names_at = check_device_names(rd, raws, bin_runs)
    info = {"binary": binary, "qemu_version_from": version_from if version else None,
            "virtio_device_names": names_at, "build_id": build_id, "profile": layout.source,
            "virtio_list": head, "virtqueue_arrays": len(arrays),
            "devices_not_on_list": sorted(v for v in array_of if v not in order)}
    return QemuCoreFacts(state=state, binary=binary, build_id=build_id, ram_blocks=blocks,
                         guest_ram=guest_ram, info=info)

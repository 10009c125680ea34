"""The layout profile of one QEMU build: ``formats/qemu-<ver>/layout-<arch>.json`` as construct
structs (one value at a time) and numpy dtypes (arrays such as ``VirtQueue vq[1024]``)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from construct import (Bytes, BytesInteger, Flag, Int8sl, Int8ul, Int16sl, Int16ul, Int32sl,
                       Int32ul, Int64sl, Int64ul, Padding, Struct)

from vdecode.errors import CorruptInput

__all__ = ("QemuLayout", "choose_layout", "load_layout", "shipped_structs")

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
        self.auto = False      # load_layout() without a version: the reader may pick another
        self.release: str | None = None   # the shipped profile folder it came from (load_layout)
        self.arch = str(data.get("arch", "x86_64"))
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
    """The shipped layout profile ``formats/qemu-<version>/layout-<arch>.json``.

    Without ``version`` the newest profile's layout is returned marked ``auto``: the core reader
    then picks the profile by the core's build-id and version string (:func:`choose_layout`).
    """
    from vdecode.profiles import available_versions, load_profile

    name = f"layout-{arch}"
    if version is None:
        # a probe, not a decision: the newest layout shipped, until the core names its release
        have = [v for v in available_versions() if (formats_path(v) / f"{name}.json").is_file()]
        version = have[-1] if have else None
        auto = True
    else:
        auto = False
    prof = load_profile(version)
    lay = QemuLayout(prof.table(name), f"formats/qemu-{prof.version}/{name}.json")
    lay.auto = auto
    lay.arch = arch
    lay.release = prof.version
    return lay


def choose_layout(arch: str, build_id: str | None, version: tuple[int, int, int] | None,
                  release: str | None = None) -> tuple[list[QemuLayout], str, bool]:
    """The shipped layouts to try on a core, best first, why the first was chosen, and whether
    it is the build's own (its build-id is listed: its failure is the answer, nothing else is
    tried).

    A profile listing the core's build-id comes first; then the profile of the version string
    QEMU keeps in its binary (nearest release when none is shipped for it); then the others,
    newest first, for a core that shows neither (the invariants decide; when none passes, the
    reader derives a layout from the core, :mod:`.derive`).

    :param release: the profile release decided for ``version``
        (:func:`vdecode.profiles.decide_release`): its layout is the version string's.
    """
    from vdecode.profiles import available_versions, nearest_version, nearness

    name = f"layout-{arch}"
    have = [v for v in available_versions() if (formats_path(v) / f"{name}.json").is_file()]
    layouts = {v: load_layout(arch, v) for v in have}
    order: list[str] = []
    why = ""
    own = False
    if build_id:
        hit = [v for v in have if build_id.lower() in layouts[v].build_ids
               or build_id.lower() in layouts[v].data.get("builds", {})]   # another known build
        if hit:
            order, why, own = hit[:1], f"it lists the core's build-id {build_id}", True
    if not order and version:
        want = ".".join(map(str, version))
        near, exact = ((release, ".".join(want.split(".")[:2]) == release)
                       if release in have else nearest_version(want, have))
        order = [near]
        why = (f"the core's QEMU version string says {want}" if exact else
               f"the core's QEMU version string says {want}, which has no profile: using the "
               f"nearest, {nearness(want, near)}")
    rest = sorted((v for v in have if v not in order), key=_num, reverse=True)
    if not order:
        why = "the core names neither a known build-id nor a version: the first profile whose checks pass"
    return [layouts[v] for v in order + rest], why, own


def shipped_structs(arch: str, names: list[str]) -> dict[str, Any]:
    """``{"structs": {name: body}, "bitfields": {name: [...]}}`` for the ``names`` a layout needs
    and its template does not carry (a 7.2 template has no ``ObjectProperty``/``GHashTable``), as
    the oldest shipped ``layout-<arch>.json`` that declares them says: library structures whose
    layout no QEMU release changes, so the data of one release serves another, and each is
    declared once, in ``formats/``. A name no shipped layout declares is left out."""
    from vdecode.profiles import available_versions, load_profile

    out: dict[str, Any] = {"structs": {}, "bitfields": {}}
    for v in available_versions():
        if not (formats_path(v) / f"layout-{arch}.json").is_file():
            continue
        data = load_profile(v).table(f"layout-{arch}")
        for name in names:
            if name not in out["structs"] and name in data["structs"]:
                out["structs"][name] = data["structs"][name]
                if name in data.get("bitfields", {}):
                    out["bitfields"][name] = data["bitfields"][name]
    return out


def _num(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def formats_path(version: str):
    from vdecode.profiles import formats_dir

    return formats_dir() / f"qemu-{version}"

"""The feature, status and protocol strings a QEMU build prints, read from its executable.

``x-query-virtio-status`` decodes bits with ``qmp_virtio_feature_map_t`` tables
(``hw/virtio/virtio-qmp.c``): arrays of ``{value; const char *feature_desc}`` ended by
``{-1, ""}``. They are ``static const`` data with pointers, so in a PIE they sit in
``.data.rel.ro`` with their pointer fields left to ``R_X86_64_RELATIVE`` relocations (the addend is
the string's address in ``.rodata``). The formats/ tables are one build's strings; another build of
the same release may print one differently (Debian's 10.0.13 says ``VIRTIO_NET_F_GUEST_USO6`` where
10.0.2 said ``VIRTIO_NET_F_GUEST_USO4`` for bit 55), and gcore keeps no ``.rodata``: with the
executable at hand (its build-id the core's) the build's own strings are read from it.

Which table is which is told by its rows: each table found is matched to the profile's map whose
``(value, name)`` pairs it shares most (the names before ``":"``), the same way for every release.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ("build_labels", "labels_against", "match_tables", "read_feature_maps")

_R_X86_64_RELATIVE = 8
_R_AARCH64_RELATIVE = 1027
_ROW = re.compile(r"[A-Z][A-Z0-9_]+: ")
_MAX_ROWS = 256                 # a map of a 128-bit feature word has at most 128 rows


def read_feature_maps(path: str) -> list[list[tuple[int, str]]]:
    """Every ``qmp_virtio_feature_map_t`` table of the executable ``path``: ``[(value, desc)]``
    in table order, the ``{-1, ""}`` end left out. ``[]`` for an executable that has none (not a
    PIE, stripped of its relocations, another QEMU layout): the caller keeps formats/ tables."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            secs = {s.name: s for s in elf.iter_sections()}
            if not all(n in secs for n in (".rela.dyn", ".data.rel.ro", ".rodata")):
                return []
            rela = secs[".rela.dyn"]
            fh.seek(rela["sh_offset"])
            rel = np.frombuffer(fh.read(rela["sh_size"]) if rela["sh_size"] % 24 == 0 else b"",
                                dtype=[("off", "<u8"), ("info", "<u8"), ("add", "<i8")])
            ro, rodata = secs[".data.rel.ro"], secs[".rodata"]
            data, rod = ro.data(), rodata.data()
            base, rob = int(ro["sh_addr"]), int(rodata["sh_addr"])
    except (OSError, ELFError, ValueError):
        return []
    kind = rel["info"] & 0xFFFFFFFF
    rel = rel[((kind == _R_X86_64_RELATIVE) | (kind == _R_AARCH64_RELATIVE))
              & (rel["off"] >= base + 8) & (rel["off"] < base + len(data))]
    ptr = dict(zip(rel["off"].tolist(), rel["add"].tolist()))

    def string(addr: int) -> str | None:
        i = addr - rob
        if not 0 <= i < len(rod):
            return None
        j = rod.find(b"\0", i)
        return None if j < 0 else rod[i:j].decode("utf-8", "replace")

    tables, done = [], 0
    for at in sorted(ptr):
        if at < done:
            continue
        first = string(ptr[at])
        if not first or not _ROW.match(first):
            continue
        # an entry is {value (u32 + padding, or u64); desc} = 16 bytes; the value precedes desc
        rows, p = [], at
        while p in ptr and len(rows) <= _MAX_ROWS:
            s = string(ptr[p])
            if s is None or (s and not _ROW.match(s)):
                break
            value = int.from_bytes(data[p - 8 - base:p - base], "little")
            if s == "":
                if value in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
                    tables.append(rows)
                break
            rows.append((value & 0xFFFFFFFF if value >> 32 == 0 else value, s))
            p += 16
        done = p
    return tables


def _name(desc: str) -> str:
    return desc.partition(":")[0].strip()


def _sections(features: Mapping[str, Any]) -> dict[str, tuple[str, Sequence[Mapping[str, Any]]]]:
    """``{map: (field, rows)}`` of the profile's ``features.json``; ``field`` is ``bit`` or
    ``mask``. A device's map is named by its ``map`` (several devices share one)."""
    out = {"transport": ("bit", features.get("transport", ())),
           "status": ("mask", features.get("status", ())),
           "vhost_user_protocol": ("bit", features.get("vhost_user_protocol", ()))}
    for entry in features.get("devices", {}).values():
        if entry.get("map"):
            out.setdefault(str(entry["map"]), ("bit", entry["rows"]))
    return out


_COMMON = ("VHOST_F_", "VHOST_USER_F_")     # rows many device maps share (vhost's own bits)


def match_tables(tables: list[list[tuple[int, str]]], features: Mapping[str, Any]
                 ) -> dict[str, list[tuple[int, str]]]:
    """``{map name: the executable's rows}`` for the tables that match one of the profile's maps.

    A table is matched by its own rows (those not shared by every vhost-capable map:
    ``VHOST_F_*``, ``VHOST_USER_F_*``): the map with the most of its ``(value, name)`` pairs,
    at least half of them, and no other as many. A table of shared rows only (a linker may
    merge the identical arrays of virtio-rng, -input and -fs into one) stands for every map whose
    rows are exactly those. A table nothing matches is left out: formats/ answers for it."""
    sections = _sections(features)
    keyed = {n: (f, {(r[f], _name(r["desc"])) for r in rows}) for n, (f, rows) in sections.items()}
    out: dict[str, list[tuple[int, str]]] = {}
    for rows in tables:
        pairs = {(v, _name(d)) for v, d in rows}
        own = {p for p in pairs if not p[1].startswith(_COMMON)}
        if not own:
            for n, (_, have) in keyed.items():
                if have == pairs and n not in out:
                    out[n] = rows
            continue
        score = sorted(((len(own & have), n) for n, (_, have) in keyed.items()), reverse=True)
        (best, name), runner = score[0], (score[1][0] if len(score) > 1 else 0)
        if best * 2 >= len(own) and best > runner and name not in out:
            out[name] = rows
    return out


def labels_against(tables: list[list[tuple[int, str]]], features: Mapping[str, Any]
                   ) -> list[tuple]:
    """The executable's strings that differ from the profile's: ``(section, key, desc)`` with
    ``section`` as :class:`~vdecode.profiles.LearnedLabel` has it (``"transport"``, ``"status"``,
    ``"vhost_user_protocol"`` or ``"devices/<id>"``, every device of the matched map); tables are
    matched by :func:`match_tables`. A row the profile's map lacks (a newer release's bit: 10.2's
    UDP tunnel bits 65-68 against 10.0's virtio-net map) is ``(section, key, desc, after)``,
    ``after`` the key of the row before it in the executable's table (``-1``: the first)."""
    sections = _sections(features)
    by_map: dict[str, list[str]] = {}
    for did, entry in features.get("devices", {}).items():
        by_map.setdefault(str(entry.get("map")), []).append(f"devices/{did}")
    out: list[tuple[str, int, str]] = []
    for name, rows in match_tables(tables, features).items():
        field, prow = sections[name]
        have = {r[field]: r["desc"] for r in prow}
        for i, (value, desc) in enumerate(rows):
            if value in have and have[value] != desc:
                out.extend((t, value, desc) for t in by_map.get(name, [name]))
            elif value not in have:
                after = rows[i - 1][0] if i else -1
                out.extend((t, value, desc, after) for t in by_map.get(name, [name]))
    return out


def build_labels(path: str, release: str | None) -> tuple[tuple, ...]:
    """:func:`labels_against` for the executable ``path`` and the profile ``release`` the core
    reader decided (``QemuVirtioState.release``; the newest for ``None``), ``()`` when the
    executable holds no table or every string is the profile's."""
    from vdecode.errors import UnsupportedInput
    from vdecode.profiles import load_profile

    tables = read_feature_maps(path)
    if not tables:
        return ()
    try:
        features = load_profile(release).table("features")
    except UnsupportedInput:
        return ()
    return tuple(labels_against(tables, features))

"""QEMU struct layouts from DWARF: the offsets a layout profile (``formats/qemu-*/layout-*.json``) holds.

Reads ``DW_TAG_structure_type`` / ``DW_TAG_member`` entries with pyelftools from any ELF that
carries DWARF for QEMU's types: a distribution's ``-dbgsym`` ``.debug`` file, a QEMU built with
``-g``, or a small probe object compiled against the same release's headers (see
``docs/formats-qemu-core.md``). The struct and field names to look up come from a template
profile (the shipped one by default), so the list of what vdecode reads stays data.

A field is named by its C access path: ``vring.num`` (member of a nested struct),
``next.tqe_circ.tql_prev`` (a member of a union member). Its ``type`` is one of ``u8`` … ``u64``,
``i8`` … ``i64``, ``i128``/``u128``, ``bool``, ``ptr`` or ``char[N]``.
"""

from __future__ import annotations

import json
from typing import Any

from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.frozen import record

__all__ = ("FieldLayout", "StructLayout", "read_dwarf_layouts", "profile_from_dwarf",
           "dumps_profile", "read_build_id_file")

_STRIP = ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_atomic_type",
          "DW_TAG_restrict_type")
_SIGNED = {5, 6, 13}          # DW_ATE_signed, signed_char, signed_fixed
_BOOL = 2                     # DW_ATE_boolean


@record
class FieldLayout:
    """One field: ``offset`` from the struct start, ``size`` in bytes, ``type`` (see module doc)."""

    name: str
    offset: int
    size: int
    type: str


@record
class StructLayout:
    name: str
    size: int
    fields: tuple[FieldLayout, ...]


def _strip(die):
    while die.tag in _STRIP:
        if "DW_AT_type" not in die.attributes:
            return die
        die = die.get_DIE_from_attribute("DW_AT_type")
    return die


def _byte_size(die) -> int | None:
    attr = die.attributes.get("DW_AT_byte_size")
    return attr.value if attr is not None else None


def _type_name(die, source: str, where: str) -> tuple[str, int]:
    die = _strip(die)
    if die.tag == "DW_TAG_pointer_type":
        return "ptr", _byte_size(die) or 8
    if die.tag == "DW_TAG_enumeration_type":
        size = _byte_size(die) or 4
        return f"u{size * 8}", size
    if die.tag == "DW_TAG_base_type":
        size = _byte_size(die)
        enc = die.attributes["DW_AT_encoding"].value
        if size is None:
            raise CorruptInput(source, f"DWARF base type of {where} has no byte size")
        if enc == _BOOL:
            return "bool", size
        return f"{'i' if enc in _SIGNED else 'u'}{size * 8}", size
    if die.tag == "DW_TAG_array_type":
        elem = _strip(die.get_DIE_from_attribute("DW_AT_type"))
        count = None
        for sub in die.iter_children():
            if sub.tag == "DW_TAG_subrange_type":
                if "DW_AT_count" in sub.attributes:
                    count = sub.attributes["DW_AT_count"].value
                elif "DW_AT_upper_bound" in sub.attributes:
                    count = sub.attributes["DW_AT_upper_bound"].value + 1
        esize = _byte_size(elem) or 1
        if count is None:
            raise UnsupportedInput(source, f"{where}: array without a bound")
        return f"char[{count}]" if esize == 1 else f"bytes[{count * esize}]", count * esize
    size = _byte_size(die)
    if size is None:
        raise UnsupportedInput(source, f"{where}: type {die.tag} has no size")
    return f"bytes[{size}]", size


def _member_offset(member) -> int:
    attr = member.attributes.get("DW_AT_data_member_location")
    if attr is None:
        return 0                                   # union members
    if isinstance(attr.value, int):
        return attr.value
    # DWARF 2 location expression: DW_OP_plus_uconst N
    data = attr.value
    if data and data[0] == 0x23:
        value, shift = 0, 0
        for byte in data[1:]:
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return value
    raise UnsupportedInput("DWARF", f"member location {data!r} is not a constant")


def _find_member(die, name: str):
    """``(member, offset of the member's container)``: a named member of ``die``, or one of an
    anonymous union or struct inside it (QEMU 10.2's ``VIRTIO_DECLARE_FEATURES`` wraps
    ``host_features`` in ``union { uint64_t host_features; uint64_t host_features_ex[2]; }``)."""
    for child in die.iter_children():
        if child.tag != "DW_TAG_member":
            continue
        if child.attributes.get("DW_AT_name") is not None:
            if child.attributes["DW_AT_name"].value.decode() == name:
                return child, 0
            continue
        inner = _strip(child.get_DIE_from_attribute("DW_AT_type"))
        if inner.tag in ("DW_TAG_union_type", "DW_TAG_structure_type"):
            found, at = _find_member(inner, name)
            if found is not None:
                return found, _member_offset(child) + at
    return None, 0


def _resolve(struct_die, path: str, source: str, struct: str) -> FieldLayout:
    offset, die = 0, struct_die
    parts = path.split(".")
    for i, part in enumerate(parts):
        member, within = _find_member(die, part)
        if member is None:
            raise UnsupportedInput(source, f"DWARF: struct {struct} has no field {'.'.join(parts[:i + 1])}")
        offset += within + _member_offset(member)
        mtype = member.get_DIE_from_attribute("DW_AT_type")
        if i + 1 < len(parts):
            die = _strip(mtype)
            continue
        tname, size = _type_name(mtype, source, f"{struct}.{path}")
        return FieldLayout(path, offset, size, tname)
    raise UnsupportedInput(source, f"DWARF: empty field path in struct {struct}")


def _index_structs(path: str, wanted: set[str]) -> dict[str, Any]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    found: dict[str, Any] = {}
    f = open(path, "rb")
    try:
        elf = ELFFile(f)
    except ELFError as err:
        f.close()
        raise CorruptInput(path, f"not an ELF file: {err}") from err
    if not elf.has_dwarf_info():
        f.close()
        raise UnsupportedInput(path, "no DWARF debug info (.debug_info) in this file")
    dwarf = elf.get_dwarf_info()
    for cu in dwarf.iter_CUs():
        for die in cu.iter_DIEs():
            if die.tag not in ("DW_TAG_structure_type", "DW_TAG_union_type"):
                continue
            if "DW_AT_declaration" in die.attributes or "DW_AT_name" not in die.attributes:
                continue
            name = die.attributes["DW_AT_name"].value.decode()
            if name in wanted and name not in found:
                found[name] = die
        if len(found) == len(wanted):
            break
    found["__file__"] = f                            # keep the stream open while DIEs are used
    return found


def read_dwarf_layouts(path: str, wanted: dict[str, list[str]]) -> dict[str, StructLayout]:
    """The layouts of ``wanted`` structs (``{struct: [field path, ...]}``) from an ELF's DWARF.

    :param path: an ELF file with ``.debug_info`` (a ``.debug`` file, a probe object).
    :raises UnsupportedInput: when a struct or field is not described in the DWARF.
    :raises CorruptInput: when the file is not ELF.
    """
    dies = _index_structs(path, set(wanted))
    try:
        out: dict[str, StructLayout] = {}
        for struct, fields in wanted.items():
            die = dies.get(struct)
            if die is None:
                raise UnsupportedInput(path, f"DWARF: no definition of struct {struct}")
            size = _byte_size(die)
            if size is None:
                raise UnsupportedInput(path, f"DWARF: struct {struct} has no size")
            out[struct] = StructLayout(struct, size,
                                       tuple(_resolve(die, p, path, struct) for p in fields))
        return out
    finally:
        dies["__file__"].close()


def profile_from_dwarf(path: str, template: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """A layout profile like ``template`` with every offset, size and type taken from ``path``.

    ``meta`` overrides the profile's top-level keys (``build_ids``, ``source``, ``qemu`` …).
    """
    wanted = {s: [f["name"] for f in body["fields"]] for s, body in template["structs"].items()}
    layouts = read_dwarf_layouts(path, wanted)
    prof = {k: v for k, v in template.items() if k != "structs"}
    prof.update(meta)
    prof["structs"] = {
        s: {"size": lay.size,
            "fields": [{"name": f.name, "offset": f.offset, "size": f.size, "type": f.type}
                       for f in lay.fields]}
        for s, lay in layouts.items()}
    return prof


def dumps_profile(profile: dict[str, Any]) -> str:
    """JSON text with one field per line (the house style for ``formats/``)."""
    lines = ["{"]
    top = [(k, v) for k, v in profile.items() if k != "structs"]
    for k, v in top:
        lines.append(f" {json.dumps(k)}: {json.dumps(v)},")
    lines.append(' "structs": {')
    structs = list(profile["structs"].items())
    for si, (name, body) in enumerate(structs):
        lines.append(f"  {json.dumps(name)}: {{\"size\": {body['size']}, \"fields\": [")
        for fi, field in enumerate(body["fields"]):
            comma = "," if fi + 1 < len(body["fields"]) else ""
            lines.append(f"   {json.dumps(field)}{comma}")
        lines.append("  ]}" + ("," if si + 1 < len(structs) else ""))
    lines.append(" }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def read_build_id_file(path: str) -> str | None:
    """The GNU build-id (``.note.gnu.build-id``) of an ELF file, as hex, or ``None``."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
        except ELFError as err:
            raise CorruptInput(path, f"not an ELF file: {err}") from err
        for sec in elf.iter_sections():
            if sec.header["sh_type"] != "SHT_NOTE":
                continue
            for n in sec.iter_notes():
                if n["n_type"] == "NT_GNU_BUILD_ID":
                    return n["n_desc"]
    return None

"""One declaration per binary layout: the numpy dtypes for bulk reads are the Construct structs'.

Checked both ways on every layout read in bulk: same member names, offsets and size, and a record
parsed by construct equals the same bytes viewed through the dtype.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from vdecode.binary import dtype_of, struct_of
from vdecode.sources.elf_dump import elf_layouts
from vdecode.sources.flattened import FLAT_RECORD, FLAT_RECORD_DTYPE
from vdecode.sources.kdump import KdumpLayouts
from vdecode.virtio.layouts import vring_layouts


def layouts():
    out = [("flat_record", FLAT_RECORD, FLAT_RECORD_DTYPE)]
    for le in (True, False):
        v = vring_layouts(le)
        out += [(f"vring.{n}.{le}", getattr(v, n), getattr(v, n + "_dtype"))
                for n in ("desc", "avail_header", "used_header", "used_elem", "packed_desc")]
        k = KdumpLayouts(le)
        out.append((f"kdump.page_desc.{le}", k.page_desc, k.page_desc_dtype))
        for is64 in (True, False):
            e = elf_layouts(is64, le)
            out.append((f"elf.phdr.{is64}.{le}", e.phdr, e.phdr_dtype))
    return out


@pytest.mark.parametrize("name,struct,dtype", layouts(), ids=[x[0] for x in layouts()])
def test_dtype_is_the_structs(name, struct, dtype):
    assert dtype.itemsize == struct.sizeof()
    raw = os.urandom(struct.sizeof() * 3)
    rows = np.frombuffer(raw, dtype=dtype)
    for i in range(3):
        parsed = struct.parse(raw[i * struct.sizeof():(i + 1) * struct.sizeof()])
        assert {n: int(rows[i][n]) for n in dtype.names} == {n: parsed[n] for n in dtype.names}


def test_struct_of_unpacks_like_construct():
    k = KdumpLayouts(False).page_desc
    raw = os.urandom(k.sizeof())
    assert struct_of(k).unpack(raw) == tuple(k.parse(raw)[n] for n in ("offset", "size", "flags", "page_flags"))


def test_variable_size_member_has_no_dtype():
    from construct import GreedyBytes, Int8ul, Struct
    with pytest.raises(TypeError):
        dtype_of(Struct("n" / Int8ul, "rest" / GreedyBytes))


# --- the layouts declared as members (binary.Layout) ---------------------------------------------


def declared():
    from vdecode.binary import Layout
    from vdecode.sources import elf_dump
    from vdecode.space import firmware

    out = [("elf.e_ident", elf_dump.E_IDENT), ("smbios.entry_21", firmware.ENTRY_21),
           ("smbios.entry_30", firmware.ENTRY_30), ("smbios.header", firmware.STRUCTURE_HEADER)]
    for le in (True, False):
        v = vring_layouts(le)
        out += [(f"vring.{n}.{le}", lay) for n, lay in v.layouts.items()]
        for is64 in (True, False):
            e = elf_layouts(is64, le)
            out += [(f"elf.{n}.{is64}.{le}", getattr(e, n)) for n in ("ehdr", "shdr", "nhdr", "phdr")]
    assert all(isinstance(lay, Layout) for _, lay in out)
    return out


def _with_constants(lay, raw: bytes) -> bytes:
    """``raw`` with each constant member's bytes in place."""
    out, at = bytearray(raw), 0
    for _, kind, _ in lay.members:
        n = kind if isinstance(kind, int) else len(kind) if isinstance(kind, bytes) \
            else int(kind[1:]) // 8
        if isinstance(kind, bytes):
            out[at:at + n] = kind
        at += n
    return bytes(out)


@pytest.mark.parametrize("name,lay", declared(), ids=[x[0] for x in declared()])
def test_a_declared_layout_reads_as_its_construct_struct(name, lay):
    struct = lay.struct
    assert lay.sizeof() == struct.sizeof() == lay.dtype.itemsize
    assert lay.dtype == dtype_of(struct)
    for _ in range(3):
        raw = _with_constants(lay, os.urandom(lay.size))
        parsed = struct.parse(raw)
        assert lay.parse(raw) == {n: parsed[n] for n in lay.names}
        row = np.frombuffer(raw, dtype=lay.dtype)[0]
        assert {n: int(row[n]) if isinstance(k, str) else row[n].tobytes()
                for n, k, _ in lay.members} == {n: parsed[n] for n in lay.names}
        assert lay.build(lay.parse(raw)) == raw


@pytest.mark.parametrize("name,lay", [x for x in declared() if any(
    isinstance(k, bytes) for _, k, _ in x[1].members)], ids=lambda x: x if isinstance(x, str) else "")
def test_a_wrong_constant_is_worded_as_construct_words_it(name, lay):
    from construct import ConstructError

    from vdecode.binary import LayoutError

    raw = bytes(lay.size)                     # zeros: no constant holds
    with pytest.raises(ConstructError) as theirs:
        lay.struct.parse(raw)
    with pytest.raises(LayoutError) as ours:
        lay.parse(raw)
    assert " ".join(str(ours.value).split()) == " ".join(str(theirs.value).split())

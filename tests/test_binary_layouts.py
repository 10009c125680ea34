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

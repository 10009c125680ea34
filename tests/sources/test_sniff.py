"""Format detection from content, and compressed dumps decompressed once into a cache."""

from __future__ import annotations

import gzip
import lzma
import os

import pytest
import zstandard

from tests.builders.elf_dump import DIRECT_MAP, prstatus_x86_64, write_elf_dump
from vdecode.errors import CorruptInput, InputError
from vdecode.sources.compressed import decompress_to_cache
from vdecode.sources.elf_dump import read_elf
from vdecode.sources.files import FileView
from vdecode.sources.sniff import classify_elf, sniff
from vdecode.space.open import open_dump


@pytest.mark.parametrize("head,kind", [
    (b"\x28\xb5\x2f\xfd\x00", "zstd"), (b"\x1f\x8b\x08", "gzip"), (b"\xfd7zXZ\x00\x00", "xz"),
    (b"KDUMP   \x06\x00", "kdump"), (b"makedumpfile\x00\x00\x00\x00", "kdump-flattened"),
    (b"\x7fELF\x02\x01\x01", "elf"),
])
def test_sniff_magics(tmp_path, head, kind):
    p = tmp_path / "f"
    p.write_bytes(head + bytes(64))
    with FileView(p) as view:
        assert sniff(view) == kind


@pytest.mark.parametrize("content,start", [
    (b"", "empty file"),
    (b"#!/bin/sh\necho hello world\n", "starts with b'#!/bin/sh\\necho h'"),
    (b"KDUMP  x", "starts with b'KDUMP  x'"),
    (bytes(100), "starts with b'" + "\\x00" * 16 + "'"),
])
def test_not_a_dump(tmp_path, content, start):
    p = tmp_path / "notes.txt"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        open_dump(p)
    assert type(e.value) is InputError
    assert str(e.value) == f"{p}: not a dump this tool reads ({start})"


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        open_dump(tmp_path / "nope.elf")
    assert str(e.value) == f"{tmp_path / 'nope.elf'}: cannot open: No such file or directory"


def test_classify_real_captures(capture):
    for kind, expected in (("elf", "elf"), ("qemu-core", "qemu-core")):
        with FileView(capture.dump(kind)) as view:
            assert classify_elf(read_elf(view)) == expected


def test_classify_synthetic(tmp_path):
    def kind(**kw) -> str:
        p = write_elf_dump(tmp_path / "x.elf", [(0, bytes(64))], **kw)
        with FileView(p) as view:
            return classify_elf(read_elf(view))
    assert kind() == "elf"
    assert kind(paging=True) == "elf-paging"
    assert kind(vmcoreinfo="OSRELEASE=6.1\n") == "elf"       # QEMU's own dump with vmcoreinfo
    assert kind(notes=[("CORE", 1, prstatus_x86_64())], vmcoreinfo="OSRELEASE=6.1\n",
                qemu_quirks=False) == "vmcore"
    assert kind(notes=[("CORE", 3, bytes(136)), ("CORE", 1, prstatus_x86_64())],
                qemu_quirks=False) == "qemu-core"
    assert kind(paging=True, mappings=[(DIRECT_MAP, 0, 64)]) == "elf-paging"


# --- compressed inputs -------------------------------------------------------------------------

def compress(kind: str, data: bytes) -> bytes:
    if kind == "zstd":
        half = len(data) // 2          # two frames: people concatenate
        c = zstandard.ZstdCompressor()
        return c.compress(data[:half]) + c.compress(data[half:])
    if kind == "gzip":
        return gzip.compress(data)
    return lzma.compress(data)


@pytest.fixture
def elf_bytes(tmp_path) -> bytes:
    ram = os.urandom(8192) + bytes(3 << 20) + b"end"           # a long zero run becomes a hole
    return write_elf_dump(tmp_path / "plain.elf", [(0, ram)]).read_bytes()


@pytest.mark.parametrize("kind,suffix", [("zstd", ".zst"), ("gzip", ".gz"), ("xz", ".xz")])
def test_compressed_dump_opens_from_cache(tmp_path, elf_bytes, kind, suffix):
    src = tmp_path / f"vm1.elf{suffix}"
    src.write_bytes(compress(kind, elf_bytes))
    cache = tmp_path / "cache"
    calls = []
    with open_dump(src, cache_dir=cache, progress=lambda done, total: calls.append((done, total))) as d:
        assert d.path == str(src) and d.format == "elf"
        assert bytes(d.space.read(8192 + (3 << 20), 3)) == b"end"
        out = d.info["decompressed_to"]
    assert out.startswith(str(cache)) and out.endswith("-vm1.elf")
    assert open(out, "rb").read() == elf_bytes
    assert os.stat(out).st_blocks * 512 < len(elf_bytes) // 2      # the zero run is a hole
    assert calls and calls[-1] == (src.stat().st_size, src.stat().st_size)
    key = os.path.basename(out)[:16]                        # the data, then its entry; no .part left
    assert sorted(p.name for p in cache.iterdir()) == [os.path.basename(out), f"{key}.json"]
    calls.clear()
    with open_dump(src, cache_dir=cache, progress=lambda *a: calls.append(a)) as d:   # cached
        assert d.info["decompressed_to"] == out and calls == []


@pytest.mark.parametrize("kind,suffix,reason", [
    ("zstd", ".zst", "zstd stream is damaged: the compressed stream ends inside a zstd frame "
                     "(truncated file)"),
    ("gzip", ".gz", "gzip stream is damaged: Compressed file ended before the end-of-stream "
                    "marker was reached"),
    ("xz", ".xz", "xz stream is damaged: Compressed file ended before the end-of-stream marker "
                  "was reached"),
])
def test_truncated_compressed_dump(tmp_path, elf_bytes, kind, suffix, reason):
    src = tmp_path / f"vm1.elf{suffix}"
    blob = compress(kind, elf_bytes)
    src.write_bytes(blob[:len(blob) * 3 // 4])
    cache = tmp_path / "cache"
    with pytest.raises(CorruptInput) as e:
        open_dump(src, cache_dir=cache)
    assert str(e.value) == f"{src}: {reason}"
    assert list(cache.iterdir()) == []


def test_compressed_non_dump(tmp_path):
    src = tmp_path / "notes.txt.gz"
    src.write_bytes(gzip.compress(b"hello, this is not a dump\n"))
    with pytest.raises(InputError) as e:
        open_dump(src, cache_dir=tmp_path / "cache")
    assert str(e.value) == f"{src}: not a dump this tool reads (starts with b'hello, this is n')"


def test_compression_bomb_layers(tmp_path):
    src = tmp_path / "deep.gz"
    src.write_bytes(gzip.compress(gzip.compress(gzip.compress(b"\x7fELF"))))
    with pytest.raises(CorruptInput) as e:
        open_dump(src, cache_dir=tmp_path / "cache")
    assert str(e.value) == f"{src}: more than 2 layers of compression"


def test_decompress_to_cache_unwritable(tmp_path):
    src = tmp_path / "a.gz"
    src.write_bytes(gzip.compress(b"x"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError) as e:
        decompress_to_cache(src, "gzip", cache_dir=blocker / "sub")
    assert str(e.value) == f"{blocker / 'sub'}: cannot write the decompression cache: Not a directory"


def test_doctests():
    import doctest

    import vdecode.render.info
    import vdecode.sources.sniff
    import vdecode.space.segmented
    for module in (vdecode.sources.sniff, vdecode.render.info, vdecode.space.segmented):
        assert doctest.testmod(module).failed == 0, module.__name__

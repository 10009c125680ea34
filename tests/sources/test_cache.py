"""The cache of decompressed inputs: one copy per input whatever its path or mtime, entries checked
before they are trusted, a size cap evicting the least recently used, ``vdecode cache list|clear``.

On the recorded bundles (``tests/data/captures``, real QEMU captures stored ``.vdb.zst``), a real
shared dump when the corpus is there, and synthetic streams for sizes the fixtures do not reach.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from vdecode.cli import cli
from vdecode.errors import InputError
from vdecode.sources import cache
from vdecode.sources.compressed import decompress_to_cache
from vdecode.space.open import open_dump

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "captures"
BUNDLES = sorted(FIXTURES.glob("*/*.vdb.zst"))


def ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def decompressed_to(path: Path, folder: Path) -> str:
    with open_dump(path, cache_dir=folder) as d:
        return d.info["decompressed_to"]


def test_fixtures_are_there():
    assert len(BUNDLES) >= 10      # the tests below take the first few: a layout change must not skip them


def test_touched_input_reuses_its_copy(tmp_path):
    src = tmp_path / "a.vdb.zst"
    shutil.copyfile(BUNDLES[0], src)
    folder = tmp_path / "cache"
    first = decompressed_to(src, folder)
    os.utime(src, (time.time() + 3600, time.time() + 3600))         # touch: a new mtime
    assert decompressed_to(src, folder) == first
    key = Path(first).name[:16]
    assert ours(folder) == [Path(first).name, f"{key}.json"]


def test_a_renamed_or_copied_input_reuses_the_copy(tmp_path):
    folder = tmp_path / "cache"
    first = decompressed_to(BUNDLES[1], folder)
    elsewhere = tmp_path / "elsewhere" / "renamed.vdb.zst"
    elsewhere.parent.mkdir()
    shutil.copyfile(BUNDLES[1], elsewhere)
    assert decompressed_to(elsewhere, folder) == first
    assert len(cache.entries(folder)) == 1
    # a different input is a different entry
    other = decompressed_to(BUNDLES[2], folder)
    assert other != first and len(cache.entries(folder)) == 2


def test_a_real_dump_touched_and_copied_is_decompressed_once(captures, tmp_path):
    cap = captures["basic"]
    src = tmp_path / "dump.elf.zst"
    shutil.copyfile(cap.folder / cap.manifest["dumps"]["elf"], src)
    folder = tmp_path / "cache"
    first = decompressed_to(src, folder)
    assert filecmp.cmp(first, cap.dump("elf"), shallow=False)
    os.utime(src, (1, 1))
    moved = src.rename(tmp_path / "bug-1234.elf.zst")
    assert decompressed_to(moved, folder) == first
    assert [e.kind for e in cache.entries(folder)] == ["decompressed"]


def test_fingerprint_is_content_only_and_sees_edits(tmp_path):
    blob = os.urandom(3 << 20)                   # past the whole-file limit: the sampled path
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(blob)
    b.write_bytes(blob)
    os.utime(b, (1, 1))
    assert cache.fingerprint(a) == cache.fingerprint(b)
    step = (len(blob) - 2 * cache.EDGE - cache.SAMPLE) // (cache.SAMPLES - 1)
    for at in (0, len(blob) - 1, cache.EDGE + 2 * step):   # an end, the last byte (a trailer's check), a sample
        edited = bytearray(blob)
        edited[at] ^= 1
        b.write_bytes(edited)
        assert cache.fingerprint(b) != cache.fingerprint(a), at
    # the documented limit: an in-place edit between the samples, same size, is not seen
    edited = bytearray(blob)
    edited[cache.EDGE + step // 2] ^= 1
    b.write_bytes(edited)
    assert cache.fingerprint(b) == cache.fingerprint(a)
    b.write_bytes(blob + b"\0")
    assert cache.fingerprint(b) != cache.fingerprint(a)


def _zst(path: Path, size: int, seed: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(
        (seed * (size // len(seed) + 1))[:size]))
    return path


@pytest.mark.parametrize("damage", ["truncate", "overwrite-start", "overwrite-end", "bad-entry",
                                    "no-entry-file"])
def test_a_damaged_entry_is_redone_not_trusted(tmp_path, damage):
    src = _zst(tmp_path / "in.zst", 5 << 20, os.urandom(4096))
    want = zstandard.ZstdDecompressor().decompress(src.read_bytes())
    folder = tmp_path / "cache"
    out = decompress_to_cache(src, "zstd", cache_dir=folder)
    key = out.name[:16]
    if damage == "truncate":
        os.truncate(out, out.stat().st_size // 2)
    elif damage.startswith("overwrite"):
        with open(out, "r+b") as f:
            f.seek(0 if damage == "overwrite-start" else len(want) - 100)
            f.write(b"\xff" * 100)
    elif damage == "bad-entry":
        (folder / f"{key}.json").write_text("{not json")
    else:
        (folder / f"{key}.json").unlink()
    calls = []
    again = decompress_to_cache(src, "zstd", cache_dir=folder, progress=lambda *a: calls.append(a))
    assert again == out and calls, "the damaged copy was trusted, not decompressed again"
    assert out.read_bytes() == want
    assert ours(folder) == [out.name, f"{key}.json"]
    calls.clear()
    decompress_to_cache(src, "zstd", cache_dir=folder, progress=lambda *a: calls.append(a))
    assert calls == []                            # and the redone copy is trusted again


def test_the_cap_evicts_the_least_recently_used(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    srcs = [_zst(tmp_path / f"in{i}.zst", 1 << 20, os.urandom(1 << 20)) for i in range(4)]
    monkeypatch.setenv("VDECODE_CACHE_MAX", "2.5M")          # room for two 1 MiB entries, not three
    outs = [decompress_to_cache(s, "zstd", cache_dir=folder) for s in srcs[:2]]
    now = time.time()
    os.utime(folder / f"{outs[0].name[:16]}.json", (now - 100, now - 100))
    os.utime(folder / f"{outs[1].name[:16]}.json", (now - 200, now - 200))
    decompress_to_cache(srcs[0], "zstd", cache_dir=folder)   # a use makes in0 the most recent
    third = decompress_to_cache(srcs[2], "zstd", cache_dir=folder)
    left = {e.source for e in cache.entries(folder)}
    assert left == {"in0.zst", "in2.zst"}                    # in1, used longest ago, went
    assert outs[0].exists() and third.exists() and not outs[1].exists()
    # an entry larger than the cap by itself is the one in use: it stays, everything else goes
    monkeypatch.setenv("VDECODE_CACHE_MAX", "100K")
    last = decompress_to_cache(srcs[3], "zstd", cache_dir=folder)
    assert [e.source for e in cache.entries(folder)] == ["in3.zst"] and last.exists()


def test_eviction_removes_stale_parts_only(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    stale, fresh = folder / ".0123456789abcdef-x.part", folder / ".fedcba9876543210-y.part"
    stale_entry = folder / ".0123456789abcdee.4242.json.part"
    for p in (stale, fresh, stale_entry):
        p.write_bytes(b"x")
    for p in (stale, stale_entry):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    (folder / "notes.txt").write_text("not ours")
    removed = cache.evict(folder, None)
    assert {e.files for e in removed} == {(stale.name,), (stale_entry.name,)}
    assert ours(folder) == [fresh.name, "notes.txt"]


def test_a_bad_cap_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("VDECODE_CACHE_MAX", "lots")
    with pytest.raises(InputError) as e:
        decompress_to_cache(BUNDLES[0], "zstd", cache_dir=tmp_path / "cache")
    assert str(e.value) == ("$VDECODE_CACHE_MAX: not a size: 'lots' (e.g. 20G, 500M, 1048576 or none)")
    assert not (tmp_path / "cache").exists()


def test_concurrent_runs_share_one_whole_copy(tmp_path):
    src = _zst(tmp_path / "in.zst", 48 << 20, os.urandom(1 << 20))
    folder = tmp_path / "cache"
    code = ("import sys; from vdecode.sources.compressed import decompress_to_cache; "
            "print(decompress_to_cache(sys.argv[1], 'zstd', cache_dir=sys.argv[2]))")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(src), str(folder)],
                             stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = {p.communicate(timeout=120)[0].strip() for p in runs}
    assert all(p.returncode == 0 for p in runs) and len(outs) == 1
    out = Path(outs.pop())
    assert out.read_bytes() == zstandard.ZstdDecompressor().decompress(src.read_bytes())
    assert ours(folder) == [out.name, f"{out.name[:16]}.json"]


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_cache_list_and_clear_from_the_command_line(tmp_path):
    folder = tmp_path / "cache"
    for b in BUNDLES[:3]:
        decompressed_to(b, folder)
    old = cache.entries(folder)[0]
    os.utime(folder / f"{old.key}.json", (time.time() - 3 * 86400,) * 2)
    r = invoke("cache", "list", "--cache-dir", str(folder), env={"VDECODE_CACHE_MAX": "1G"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"cache: {folder}  (cap 1 GiB, $VDECODE_CACHE_MAX)"
    assert lines[1].split() == ["on", "disk", "apparent", "last", "used", "source"]
    assert [ln.split("  ")[-1] for ln in lines[2:5]][-1] == old.source
    assert lines[4].split()[-3:] == ["days", "ago", old.source]
    assert lines[5].startswith("total: 3 entries, ")
    data = json.loads(invoke("cache", "list", "--json", "--cache-dir", str(folder)).output)
    assert [e["source"] for e in data["entries"]][0] == old.source and data["folder"] == str(folder)
    assert data["on_disk"] == sum(e["on_disk"] for e in data["entries"]) > 0

    r = invoke("cache", "clear", "--older-than", "1d", "--cache-dir", str(folder))
    assert r.exit_code == 0 and r.output.startswith(f"{folder}: removed 1 entry, ")
    copy = tmp_path / "copy.vdb.zst"
    shutil.copyfile(BUNDLES[1], copy)                        # any copy names the entry
    r = invoke("cache", "clear", "--input", str(copy), "--cache-dir", str(folder))
    assert r.exit_code == 0 and r.output.startswith(f"{folder}: removed 1 entry, ")
    assert [e.source for e in cache.entries(folder)] == [BUNDLES[2].name]
    r = invoke("cache", "clear", env={"VDECODE_CACHE": str(folder)})      # $VDECODE_CACHE, all
    assert r.exit_code == 0 and r.output.startswith(f"{folder}: removed 1 entry, ")
    assert ours(folder) == []
    r = invoke("cache", "clear", "--older-than", "soon", "--cache-dir", str(folder))
    assert r.exit_code == 2 and "not a duration: 'soon'" in r.output


def test_cache_list_of_a_missing_folder_is_empty(tmp_path):
    r = invoke("cache", "list", "--cache-dir", str(tmp_path / "none"), env={"VDECODE_CACHE_MAX": None})
    assert r.exit_code == 0
    assert r.output.splitlines()[-1] == "total: 0 entries, 0 B on disk, 0 B apparent"


def test_the_default_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("VDECODE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "xdg" / "vdecode"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.default_cache_dir() == tmp_path / "home" / ".cache" / "vdecode"
    monkeypatch.setenv("VDECODE_CACHE", str(tmp_path / "mine"))
    assert cache.default_cache_dir() == tmp_path / "mine"


def test_doctests():
    import doctest

    from vdecode.render import cache_list
    for mod in (cache, cache_list):
        assert doctest.testmod(mod).failed == 0, mod.__name__


def test_a_kept_kdump_index_is_listed_and_cleared_by_its_input(tmp_path):
    from vdecode.sources.flattened import flat_index_key

    dump = tmp_path / "vm.kdump"
    dump.write_bytes(b"x" * 100)
    folder = tmp_path / "cache"
    folder.mkdir()
    index = folder / f"{flat_index_key(dump)}-vm.kdump.flatindex.npz"
    index.write_bytes(b"i" * 5000)
    (folder / "fedcba9876543210-other.flatindex.npz").write_bytes(b"j")
    [mine] = [e for e in cache.entries(folder) if e.files == (index.name,)]
    assert (mine.kind, mine.source, mine.apparent) == ("index", "vm.kdump", 5000)
    r = invoke("cache", "list", "--cache-dir", str(folder))
    assert "vm.kdump  (kdump record index)" in r.output
    r = invoke("cache", "clear", "--input", str(dump), "--cache-dir", str(folder))
    assert r.output.startswith(f"{folder}: removed 1 entry, ")
    assert ours(folder) == ["fedcba9876543210-other.flatindex.npz"]

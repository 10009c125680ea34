"""QEMU cores written by the Linux kernel (SIGABRT), as systemd-coredump stores them (``.zst``).

The case is a real recording (``tools/capture/scenarios/kabortnoram.json``: QEMU 7.2.22, q35,
``dump-guest-core=off``, killed with SIGABRT by the recorder at the instant ``truth.json`` was
asked). The committed fixture ``tests/data/kcore/kabortnoram`` is its core and the ELF guest
dump of the same instant, slimmed by ``tests/data/kcore/make_slim_core.py``: headers, notes and
layout are the writers', and of the memory only the pages vdecode reads are kept (the rest is
zeros); they answer exactly as the full files. ``VDECODE_KERNEL_CORE_CASE`` names a full
recording folder (``qemu.core``, ``dump.elf``, ``truth.json``) to run these tests on instead.
Its bundles are fixtures in ``tests/data/captures/kabortnoram``.
It has no guest RAM, and the binary's ``.text``/``.rodata`` are left out (``coredump_filter``
0x33), so the device names come from the binary when it is at hand with the core's build-id,
else from ``formats/qemu-7.2/devices.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import zstandard
import pytest

from tests.builders.elf_dump import write_elf_dump
from tests.reconstruct.fidelity import run_qmp, score_args
from vdecode.errors import CorruptInput, InputError, MissingData
from vdecode.space.open import open_dump, open_dumps

# The committed fixture (tests/data/kcore/README.md); VDECODE_KERNEL_CORE_CASE names a full
# recording folder instead (qemu.core or qemu.core.zst, truth.json).
FIXTURE = Path(__file__).resolve().parent.parent / "data" / "kcore" / "kabortnoram"
CASE = Path(os.environ.get("VDECODE_KERNEL_CORE_CASE") or FIXTURE)
BUILD_ID = "d9541fd67c4ea37f9ca7fca0f5096f32b3b7e7e0"
SYSTEM_QEMU = Path("/usr/bin/qemu-system-x86_64")


def _write_sparse(src, out: Path, limit: int | None = None) -> Path:
    """Copy the stream ``src`` (up to ``limit`` bytes) to ``out``, leaving holes for zeros: the
    zeroed pages of a slim fixture take no disk."""
    block, zero, size = 1 << 16, bytes(1 << 16), 0
    with open(out, "wb") as dst:
        while chunk := src.read(1 << 20 if limit is None else min(1 << 20, limit - size)):
            for at in range(0, len(chunk), block):
                piece = chunk[at:at + block]
                if piece == zero[:len(piece)]:
                    dst.seek(len(piece), os.SEEK_CUR)
                else:
                    dst.write(piece)
            size += len(chunk)
        dst.truncate(size)
    return out


def _unpack(packed: Path, out: Path) -> Path:
    with open(packed, "rb") as f:
        return _write_sparse(zstandard.ZstdDecompressor().stream_reader(f), out)


def _input(tmp_path_factory, name: str) -> Path | None:
    """The case's ``name``, plain: as stored, or its ``name.zst`` decompressed once."""
    if (CASE / name).exists():
        return CASE / name
    if not (CASE / f"{name}.zst").exists():
        return None
    return _unpack(CASE / f"{name}.zst", tmp_path_factory.mktemp("kcore") / name)


@pytest.fixture(scope="module")
def kcore(tmp_path_factory) -> Path:
    """The case's QEMU core."""
    path = _input(tmp_path_factory, "qemu.core")
    if path is None:
        pytest.fail(f"{CASE} holds neither qemu.core nor qemu.core.zst "
                    f"(VDECODE_KERNEL_CORE_CASE={os.environ.get('VDECODE_KERNEL_CORE_CASE')!r})")
    return path


@pytest.fixture(scope="module")
def recorded_dump(tmp_path_factory) -> Path:
    """The ELF guest dump QEMU wrote at the same instant (``dump-guest-memory``)."""
    path = _input(tmp_path_factory, "dump.elf")
    if path is None:
        pytest.skip(f"{CASE} holds no dump.elf")
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VDECODE_CACHE", str(tmp_path_factory.getbasetemp() / "vdecode-cache"))


@pytest.fixture(scope="module")
def truth() -> list:
    return json.loads((CASE / "truth.json").read_text())["exchanges"]


def _no_binary(tmp_path: Path) -> str:
    return str(tmp_path / "no-such-qemu")


def test_info_says_who_wrote_the_core_and_why(tmp_path, kcore):
    with open_dump(kcore, binary=_no_binary(tmp_path)) as d:
        info = d.info
        assert d.format == "qemu-core" and d.space is None
    assert info["core_writer"].startswith("linux kernel")
    assert info["signal"]["name"] == "SIGABRT" and info["signal"]["signo"] == 6
    assert info["crashing_thread"]["cursig"] == 6 and info["threads"] >= 2
    assert info["binary"].endswith("/qemu-system-x86_64") and info["build_id"] == BUILD_ID
    assert info["guest_ram"].startswith("absent")
    assert info["binary_file"].startswith("not used: cannot open")
    # .text and .rodata of the binary are left out; the anonymous guest RAM (MADV_DONTDUMP) too
    left = {a["file"]: a for a in info["absent_mappings"]}
    assert left[info["binary"]]["mappings"] >= 2
    assert left["[anonymous]"]["bytes"] >= 160 << 20
    assert any("VirtIODevice.name" in c and "skipped" in c for c in info["checks_skipped"])


def test_info_text_and_json(tmp_path, kcore):
    from vdecode.render.info import render_info_text
    with open_dump(kcore, binary=_no_binary(tmp_path)) as d:
        text = render_info_text(d.info)
    assert "signal:       SIGABRT (6)" in text
    assert "guest RAM:    absent" in text
    assert f"build-id {BUILD_ID}" in text
    assert "left out:" in text


def test_absent_bytes_are_missing_not_zero(tmp_path, kcore):
    with open_dump(kcore, binary=_no_binary(tmp_path)) as d:
        host = d.space if d.space is not None else None
        assert host is None
    from vdecode.sources.elf_dump import read_elf
    from vdecode.sources.files import FileView
    from vdecode.space.qemu_core import host_space
    view = FileView(kcore)
    elf = read_elf(view)
    host = host_space(view, elf)
    start, size = host.absent_ranges()[0]
    assert not host.is_present(start, 1)
    with pytest.raises(MissingData, match=r"is mapped \[0x[0-9a-f]+, 0x[0-9a-f]+\) but not in "
                                          r"this core \(FileSiz 0"):
        host.read(start, 8)
    view.close()


def test_state_commands_answer_exactly_without_binary(truth, tmp_path, kcore):
    s = score_args(truth, [str(kcore), "--binary", _no_binary(tmp_path)])
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-600:]


def test_binary_with_another_build_id_is_reported_and_not_used(truth, kcore):
    with open_dump(kcore, binary=sys.executable) as d:
        assert d.info["binary_file"].startswith(f"not used: {sys.executable} has build-id")
        assert BUILD_ID in d.info["binary_file"]
    s = score_args(truth, [str(kcore), "--binary", sys.executable])
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-600:]


def _build_id_of(path: Path) -> str | None:
    from vdecode.sources.files import FileView
    from vdecode.sources.qemu_core.process import read_build_id_file
    v = FileView(path)
    try:
        return read_build_id_file(v)
    finally:
        v.close()


@pytest.mark.skipif(not SYSTEM_QEMU.exists() or _build_id_of(SYSTEM_QEMU) != BUILD_ID,
                    reason="needs Debian's qemu-system-x86 1:7.2+dfsg-7+deb12u18+b3 installed")
def test_the_binary_gives_what_the_core_left_out(truth, kcore):
    with open_dump(kcore) as d:
        assert d.info["binary_file"].startswith(f"{SYSTEM_QEMU} (build-id matches)")
        assert d.info["qemu_version_from"] == "binary file"
        assert not d.info["checks_skipped"]
    s = score_args(truth, [str(kcore)])
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-600:]


def test_element_request_names_the_missing_guest_ram(truth, tmp_path, kcore):
    path = next(r["arguments"]["path"] for r, _ in truth if r["execute"] == "x-query-virtio-status")
    lines, _ = run_qmp([str(kcore), "--binary", _no_binary(tmp_path)],
                       [{"execute": "qmp_capabilities"},
                        {"execute": "x-query-virtio-queue-element",
                         "arguments": {"path": path, "queue": 0}}])
    reply = json.loads([x for x in lines if x.strip()][-1])
    assert reply == {"error": {"class": "GenericError", "desc":
                               "vdecode: cannot answer from these inputs: guest RAM is not in this "
                               "QEMU core (dump-guest-core=off); give a guest dump of the same "
                               "instant too: vdecode qmp CORE GUEST_DUMP"}}


def test_truncated_core_says_it_is_cut(tmp_path, kcore):
    """The kernel writes a core's notes first: cut in half, it still opens (issue 24), and what
    it lost is counted once: the core is cut short, whatever its guest RAM."""
    plain = kcore
    cut = tmp_path / "core.truncated"
    with open(plain, "rb") as src:
        _write_sparse(src, cut, plain.stat().st_size // 2)
    r = subprocess.run([sys.executable, "-m", "vdecode", "info", str(cut)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    with open_dump(cut) as d:
        assert d.incomplete and d.absent.parts[0].kind == "cut-short"
        assert d.absent.parts[0].reason.startswith(
            f"the file ends at offset {plain.stat().st_size // 2:#x}, its program headers say 0x")
    r = subprocess.run([sys.executable, "-m", "vdecode", str(cut), "--json"], capture_output=True,
                       text=True)
    assert r.returncode in (0, 4), r.stderr
    if r.returncode == 0:
        assert json.loads(r.stdout)["absent"]["incomplete"] is True
    else:                           # QEMU's own state was in the lost half: one line
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("vdecode: error: ")


# --- the core plus a guest dump of the same instant -------------------------------------------


def _guest_dump(tmp_path: Path, core, *, ram_scale: float = 1.0, used_delta: int = 0) -> Path:
    """A sparse ELF guest dump with QEMU's RAM map and each split ring's ``used->idx`` as QEMU's
    ``used_idx`` (+ ``used_delta``): what a dump of the same instant agrees with."""
    pages: dict[int, bytearray] = {}
    for dev in core.qemu.devices:
        for q in dev.queues.values():
            if q.desc and q.used_idx is not None:
                page = (q.used + 2) & ~0xFFF
                buf = pages.setdefault(page, bytearray(4096))
                off = q.used + 2 - page
                buf[off:off + 2] = ((q.used_idx + used_delta) & 0xFFFF).to_bytes(2, "little")
    segs = []
    for r in core.info["ram_ranges"]:
        start, end = r["start"], r["start"] + int(r["size"] * ram_scale)
        pos = start
        for page in sorted(p for p in pages if start <= p < end):
            if page > pos:
                segs.append((pos, (page - pos, None)))
            segs.append((page, bytes(pages[page])))
            pos = page + 4096
        if end > pos:
            segs.append((pos, (end - pos, None)))
    return write_elf_dump(tmp_path / "guest.elf", segs)


def test_core_and_guest_dump_in_either_order(tmp_path, kcore):
    with open_dump(kcore, binary=_no_binary(tmp_path)) as core:
        guest = _guest_dump(tmp_path, core)
    for order in ((kcore, guest), (guest, kcore)):
        with open_dumps(order, binary=_no_binary(tmp_path)) as d:
            assert d.format == "qemu-core+elf" and d.space is not None and d.qemu is not None
            assert d.info["guest_dump"]["file"] == str(guest)
            assert not [w for w in d.info["warnings"] if "instant" in w or "guest RAM" in w]


def test_a_dump_of_another_instant_is_reported(tmp_path, kcore):
    with open_dump(kcore, binary=_no_binary(tmp_path)) as core:
        guest = _guest_dump(tmp_path, core, used_delta=3)
    with open_dumps((kcore, guest), binary=_no_binary(tmp_path)) as d:
        moved = [w for w in d.info["warnings"] if "may not be of" in w]
    assert moved and "rings differ from QEMU's state" in moved[0]


def test_a_dump_with_less_ram_does_not_belong(tmp_path, kcore):
    with open_dump(kcore, binary=_no_binary(tmp_path)) as core:
        guest = _guest_dump(tmp_path, core, ram_scale=0.5)
    with pytest.raises(InputError, match=r"guest\.elf: does not belong with .*qemu\.core: "
                                         r"QEMU's guest RAM \[0x0, 0x[0-9a-f]+\) .* bytes short"):
        open_dumps((kcore, guest), binary=_no_binary(tmp_path))


def test_two_guest_dumps_are_refused(tmp_path, kcore):
    with open_dump(kcore, binary=_no_binary(tmp_path)) as core:
        guest = _guest_dump(tmp_path, core)
    other = tmp_path / "other.elf"
    shutil.copy(guest, other)
    r = subprocess.run([sys.executable, "-m", "vdecode", "qmp", str(guest), str(other)],
                       capture_output=True, text=True, input="")
    assert r.returncode == 3
    assert r.stderr.strip() == (f"vdecode: error: {other}: two inputs must be a QEMU process core "
                                f"and a guest dump (ELF or kdump): got {guest} (elf), {other} (elf)")


def test_guest_ram_map_is_the_recorded_one(tmp_path, kcore):
    with open_dump(kcore, binary=_no_binary(tmp_path)) as core:
        runs = [(r["start"], r["size"]) for r in core.info["ram_ranges"]]
    assert (0, 160 << 20) in runs
    assert np.all([s >= 0 for s, _ in runs])


def test_core_and_the_recorded_guest_dump(truth, tmp_path, kcore, recorded_dump):
    for order in ((kcore, recorded_dump), (recorded_dump, kcore)):
        with open_dumps(order, binary=_no_binary(tmp_path)) as d:
            assert d.format == "qemu-core+elf" and d.space is not None
            assert d.info["guest_dump"]["file"] == str(recorded_dump)
            assert not [w for w in d.info["warnings"] if "instant" in w or "guest RAM" in w]
    s = score_args(truth, [str(kcore), str(recorded_dump), "--binary", _no_binary(tmp_path)])
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-600:]


def test_element_requests_are_answered_with_the_recorded_guest_dump(truth, tmp_path, kcore,
                                                                     recorded_dump):
    names = {r["arguments"]["path"]: want["return"]["name"] for r, want in truth
             if r["execute"] == "x-query-virtio-status" and "return" in want}
    queues = sorted({(r["arguments"]["path"], r["arguments"]["queue"]) for r, want in truth
                     if r["execute"] == "x-query-virtio-queue-status" and "return" in want})
    lines, err = run_qmp([str(kcore), str(recorded_dump), "--binary", _no_binary(tmp_path)],
                         [{"execute": "qmp_capabilities"}]
                         + [{"execute": "x-query-virtio-queue-element", "id": k,
                             "arguments": {"path": p, "queue": q}}
                            for k, (p, q) in enumerate(queues)])
    replies = {o.pop("id"): o for o in map(json.loads, filter(str.strip, lines)) if "id" in o}
    assert len(replies) == len(queues) > 0, err[-600:]
    for k, (path, _) in enumerate(queues):
        got = replies[k].get("return")
        assert got is not None, (queues[k], replies[k])
        assert got["name"] == names[path] and got["descs"], (queues[k], got)

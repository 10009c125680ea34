"""``vdecode triage``: pairing by names and contents, error records, and the same records from
local processes and from a Dask cluster (``distributed.LocalCluster``, two worker processes).

The fleet is real: the recorded bundles (``tests/data/captures/*/*.vdb.zst``, decompressed into
tmp), ``samples/*.vdb``, the shared captures (compressed dumps, QEMU cores and logs, as they are
stored), plus a truncated dump and a garbage file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from tests.conftest import (CAPTURES, NO_CAPTURES, REPO, TARGETS, capture_arch,
                            capture_folders, capture_names)
from vdecode.cli import cli
from vdecode.triage import discover, run_triage
from vdecode.triage.discover import stem_of
from vdecode.triage.output import render_csv, render_jsonl, render_table
from vdecode.triage.run import run_dask, run_local

SAMPLE_LOG = REPO / "samples" / "basic-early.jsonl"


def _touch_elf(path: Path) -> Path:
    path.write_bytes(b"\x7fELF" + b"\0" * 60)       # an ELF header too short to parse
    return path


def test_pairs_by_name_folder_and_libvirt(tmp_path):
    _touch_elf(tmp_path / "web1.elf")
    shutil.copy(SAMPLE_LOG, tmp_path / "web1.qmp.jsonl")
    lib = tmp_path / "var" / "log" / "libvirt" / "qemu"
    lib.mkdir(parents=True)
    _touch_elf(tmp_path / "db2.kdump")
    shutil.copy(SAMPLE_LOG, lib / "db2.log")
    cap = tmp_path / "captures" / "basic"
    cap.mkdir(parents=True)
    _touch_elf(cap / "dump.elf")
    shutil.copy(SAMPLE_LOG, cap / "early.jsonl")
    (cap / "case.json").write_text("{}")
    (cap / "console.log").write_text("[    0.000000] Linux version 6.1\n")
    shutil.copy(REPO / "samples" / "basic-core.vdb", cap / "basic-core.vdb")
    jobs = {j.vm: j for j in discover([str(tmp_path)])}
    assert sorted(jobs) == ["basic", "basic-core", "db2", "web1"]
    assert jobs["web1"].logs == (str(tmp_path / "web1.qmp.jsonl"),)
    assert jobs["db2"].logs == (str(lib / "db2.log"),)
    assert jobs["basic"].dumps == ((str(cap / "dump.elf"), "dump"),)
    assert jobs["basic"].logs == (str(cap / "early.jsonl"),)
    assert jobs["basic-core"].dumps == ((str(cap / "basic-core.vdb"), "bundle"),)
    assert jobs["basic-core"].logs == ()                        # a bundle stands alone


def test_stems():
    assert stem_of("web-01.example.com.qmp.jsonl") == "web-01.example.com"
    assert stem_of("dump.kdump-zlib.zst") == "dump"
    assert stem_of("qemu.core.zst") == "qemu"
    assert stem_of("elf+early.vdb.zst") == "elf+early"


def test_bad_files_are_error_records_and_exit_0(tmp_path):
    (tmp_path / "garbage.core").write_bytes(b"this is not a core dump\n" * 100)
    data = (REPO / "samples" / "mixed-elf-early.vdb").read_bytes()
    (tmp_path / "trunc.elf").write_bytes(data[:len(data) // 3])
    (tmp_path / "empty.vdb").write_bytes(b"")
    shutil.copy(REPO / "samples" / "basic-core.vdb", tmp_path / "good.vdb")
    result = CliRunner().invoke(cli, ["triage", str(tmp_path), "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    records = {r["vm"]: r for r in map(json.loads, result.output.splitlines())}
    assert sorted(records) == ["empty", "garbage", "good", "trunc"]
    assert records["garbage"]["verdict"] == "unreadable"
    assert records["garbage"]["errors"] == [{
        "input": str(tmp_path / "garbage.core"), "class": "InputError",
        "message": f"{tmp_path / 'garbage.core'}: not a dump this tool reads "
                   f"(starts with b'this is not a co')"}]
    # cut inside guest RAM: it opens, and says what is gone (issue 24)
    assert records["trunc"]["errors"] == [] and records["trunc"]["verdict"] == "incomplete"
    assert records["trunc"]["absent"]["lines"][0].startswith("the dump is cut short") or \
        "of guest RAM absent, the dump is cut short: the file ends at offset" in \
        records["trunc"]["absent"]["lines"][0]
    assert records["empty"]["errors"][0]["message"] == f"{tmp_path / 'empty.vdb'}: empty file"
    good = records["good"]
    assert good["errors"] == [] and good["verdict"] == "ok"
    assert good["inputs"]["format"] == "bundle" and good["qemu"]["state"] == "core"
    assert good["qemu"]["version"] == "7.2.22" and good["counts"]["devices"] == 7


def test_a_log_without_dump_is_a_record(tmp_path):
    """A log whose VM has no dump still gets a record saying so."""
    shutil.copy(SAMPLE_LOG, tmp_path / "lonely.qmp.jsonl")
    (rec,) = run_local(discover([str(tmp_path)]), 1)
    assert rec["verdict"] == "no-dump" and rec["inputs"]["logs"] == [str(tmp_path /
                                                                            "lonely.qmp.jsonl")]


def test_compressed_logs_are_logs(tmp_path):
    """gzip and zstd logs (as log rotation leaves them) pair like plain ones; an xz one says what
    to do."""
    import gzip
    text = SAMPLE_LOG.read_bytes()
    _touch_elf(tmp_path / "web1.elf")
    (tmp_path / "web1.qmp.jsonl.gz").write_bytes(gzip.compress(text))
    _touch_elf(tmp_path / "web2.elf")
    (tmp_path / "web2.qmp.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    (tmp_path / "web3.qmp.jsonl.xz").write_bytes(b"\xfd7zXZ\x00" + bytes(64))
    jobs = {j.vm: j for j in discover([str(tmp_path)])}
    assert jobs["web1"].logs == (str(tmp_path / "web1.qmp.jsonl.gz"),)
    assert jobs["web2"].logs == (str(tmp_path / "web2.qmp.jsonl.zst"),)
    shutil.copy(tmp_path / "web2.qmp.jsonl.zst", tmp_path / "lonely.qmp.jsonl.zst")
    recs = {r["vm"]: r for r in run_local(discover([str(tmp_path / "lonely.qmp.jsonl.zst")]), 1)}
    assert recs["lonely"]["verdict"] == "no-dump", recs
    recs = {r["vm"]: r for r in run_local(discover([str(tmp_path / "web3.qmp.jsonl.xz")]), 1)}
    assert "decompress it first" in json.dumps(recs["web3"]), recs


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> list[str]:
    """The recorded bundles (decompressed), the samples, broken files, and the shared captures
    (as stored) when they are there."""
    root = tmp_path_factory.mktemp("fleet")
    for src in sorted((REPO / "tests" / "data" / "captures").glob("*/*.vdb.zst")):
        out = root / "recorded" / src.parent.name / src.name[:-4]
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as f, open(out, "wb") as o:
            zstandard.ZstdDecompressor().copy_stream(f, o)
    for src in sorted((REPO / "samples").glob("*.vdb")):
        shutil.copy(src, root / src.name)
    broken = root / "broken"
    broken.mkdir()
    data = (REPO / "samples" / "mixed-elf-early.vdb").read_bytes()
    (broken / "vm9.elf").write_bytes(data[:100_000])
    shutil.copy(SAMPLE_LOG, broken / "vm9.qmp.jsonl")
    (broken / "noise.vdb").write_bytes(os.urandom(8192))
    paths = [str(root)]
    paths += [str(folder) for folder in dict.fromkeys((CAPTURES, TARGETS)) if folder.is_dir()]
    return paths


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("triage-cache"))


@pytest.fixture(scope="module")
def local_records(fleet, cache_dir) -> list[dict]:
    return run_triage(fleet, workers=2, cache_dir=cache_dir)


def test_local_fleet(fleet, local_records):
    by_vm = {r["vm"]: r for r in local_records}
    recorded = [r for r in local_records if "/recorded/" in (r["inputs"]["dump"] or "")]
    assert len(recorded) == len(list((REPO / "tests" / "data" / "captures").glob("*/*.vdb.zst")))
    assert all(r["errors"] == [] and r["inputs"]["format"] == "bundle" for r in recorded)
    assert all(r["counts"]["devices"] > 0 for r in recorded)
    # a bundle cut short (named .elf): it opens, as a bundle (its own VM: it carries its log),
    # its lost tail is counted, the verdict says so; the log beside it has no dump left
    (vm9,) = [r for r in local_records if (r["inputs"]["dump"] or "").endswith("broken/vm9.elf")]
    assert by_vm["vm9"]["verdict"] == "no-dump"
    assert vm9["verdict"] == "incomplete" and vm9["errors"] == []
    assert vm9["absent"]["incomplete"] and vm9["absent"]["kinds"] == ["cut-short"]
    assert vm9["absent"]["lines"][0].startswith("389.5 KiB of guest RAM absent, the dump is cut "
                                                "short: the file ends at offset 0x186a0")
    assert vm9["counts"]["unknown"] > 0
    assert all(r["absent"] is None for r in recorded)
    assert by_vm["vm9"]["inputs"]["logs"] == [f"{fleet[0]}/broken/vm9.qmp.jsonl"]
    assert by_vm["noise"]["errors"][0]["class"] == "InputError"
    assert by_vm["basic-core"]["inputs"]["dump"].endswith("basic-core.vdb")
    # one record a line, the table and the CSV cover every record
    assert len(render_jsonl(local_records).splitlines()) == len(local_records)
    assert len(render_csv(local_records).splitlines()) == len(local_records) + 1
    vms = [r for r in local_records if r["verdict"] != "unrecognised"]   # files, not VMs
    assert f"{len(vms)} VMs:" in render_table(local_records, width=200)


def test_shared_captures(local_records):
    if not CAPTURES.is_dir():
        pytest.skip(NO_CAPTURES)
    by_vm = {r["vm"]: r for r in local_records}
    basic = by_vm["basic"]
    assert basic["inputs"]["dump"] == f"{CAPTURES}/basic/qemu.core.zst"
    assert basic["inputs"]["format"] == "qemu-core"
    assert basic["inputs"]["logs"] == [f"{CAPTURES}/basic/early.jsonl",
                                       f"{CAPTURES}/basic/instant.jsonl"]
    # the serial console is the capture's file too: unused with its reason, not a VM of its own
    assert [u["path"] for u in basic["inputs"]["unused"]] == [
        f"{CAPTURES}/basic/console.log", f"{CAPTURES}/basic/dump.elf.zst",
        f"{CAPTURES}/basic/dump.kdump-zlib.zst"]
    assert basic["errors"] == [] and basic["qemu"]["state"] == "core"


def test_other_targets_cores(local_records):
    """aarch64 and s390x guests' QEMU cores (``captures-targets``) triage like x86_64's: QEMU's
    state from the core, every device QEMU listed."""
    targets = [n for n in capture_names() if capture_arch(n) != "x86_64"]
    if not targets:
        pytest.skip(NO_CAPTURES)
    by_vm = {r["vm"]: r for r in local_records}
    for name in targets:
        rec, folder = by_vm[name], capture_folders()[name]
        assert rec["inputs"]["dump"] == f"{folder}/qemu.core.zst", rec["inputs"]
        assert rec["errors"] == [] and rec["qemu"]["state"] == "core", rec
        truth = json.loads((folder / "truth.json").read_text())["exchanges"]
        listed = next(r["return"] for q, r in truth if q.get("execute") == "x-query-virtio")
        assert rec["counts"]["devices"] == len(listed), (name, rec["counts"])


def test_dask_cluster_gives_the_same_records(fleet, cache_dir, local_records, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    import dask

    # Dask's scratch space (and its lock files) in tmp_path, else $TMPDIR/dask-scratch-space stays
    # behind: the config here, the variable for the worker processes
    monkeypatch.setenv("DASK_TEMPORARY_DIRECTORY", str(tmp_path))
    with dask.config.set({"temporary-directory": str(tmp_path)}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, local_directory=str(tmp_path)) as cluster:
        records = run_dask(discover(fleet, cache_dir=cache_dir), cluster.scheduler_address)
    assert render_jsonl(records) == render_jsonl(local_records)


@pytest.mark.parametrize("guest_runs, belongs", [
    (((0, 1 << 28),), True),
    (((0, 1 << 28), (1 << 32, 1 << 27)), False),     # RAM above every region QEMU maps
], ids=["same-vm", "another-vm"])
def test_a_core_takes_a_guest_dump_only_if_they_belong_together(monkeypatch, guest_runs, belongs):
    """A core without guest RAM borrows the VM's guest dump through the check ``vdecode qmp CORE
    GUEST_DUMP`` makes: a guest dump of another VM is an error of that file, and the core is used
    alone (its record is then a core's without RAM), never a machine of two VMs."""
    from tests.builders.rings import BytesSpace
    from vdecode.sources.qemu_state import QemuVirtioState
    from vdecode.space import open as space_open
    from vdecode.space.dump import Dump
    from vdecode.triage.discover import VmJob
    from vdecode.triage.record import _open

    ram = [{"start": 0, "end": 1 << 28, "size": 1 << 28, "block": "pc.ram", "region": "ram-below-4g"}]
    dumps = {"vm/qemu.core": Dump(path="vm/qemu.core", format="qemu-core", space=None,
                                  info={"ram_ranges": ram}, qemu=QemuVirtioState(source="core")),
             "vm/guest.elf": Dump(path="vm/guest.elf", format="elf", info={},
                                  space=BytesSpace({s: bytes(16) for s, _ in guest_runs}))}
    # the guest dump's RAM: its runs' extents, as check_belong_together reads them
    dumps["vm/guest.elf"].space.ranges = lambda: [(s, n) for s, n in guest_runs]
    monkeypatch.setattr(space_open, "open_dump", lambda path, **kw: dumps[path])
    errors: list = []
    job = VmJob(vm="vm", dumps=(("vm/qemu.core", "qemu-core"), ("vm/guest.elf", "dump")))
    opened, memory, unused = _open(job, errors)
    assert opened.format == "qemu-core" and unused == []
    if belongs:
        assert errors == [] and memory == "vm/guest.elf"
        assert opened.space is dumps["vm/guest.elf"].space and opened.qemu is not None
    else:
        assert memory is None and opened is dumps["vm/qemu.core"]
        assert [(e["input"], e["class"]) for e in errors] == [("vm/guest.elf", "InputError")]
        assert "does not belong with vm/qemu.core" in errors[0]["message"]

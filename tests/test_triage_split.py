"""One VM's carving split across triage's workers: the recorded driver-reset captures (whose
logged rings went stale, so the session carves) give the same records whether each VM carves
alone, its chunks go out as separate tasks, or a part fails and the VM carves by itself."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest
import zstandard

from tests.conftest import REPO
from vdecode.triage import discover
from vdecode.triage import run as triage_run
from vdecode.triage.record import triage_part, triage_vm
from vdecode.triage.run import _Completed, _drive, run_local
from vdecode.virtio import carve

CARVE = REPO / "tests" / "data" / "carve"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> list[str]:
    """The three recorded driver-reset VMs, as ``NAME.elf`` + ``NAME.qmp.jsonl``."""
    root = tmp_path_factory.mktemp("split-fleet")
    for case in ("reset", "resetstale", "reboot"):
        for src, dst in (("dump.elf.zst", f"{case}.elf"), ("early.jsonl.zst", f"{case}.qmp.jsonl")):
            with open(CARVE / case / src, "rb") as f, open(root / dst, "wb") as o:
                zstandard.ZstdDecompressor().copy_stream(f, o)
    return [str(root)]


class Inline:
    """A pool that runs each task when it is submitted, and keeps the names of what ran."""

    def __init__(self, fail_parts: bool = False) -> None:
        self.ran: list[str] = []
        self.fail_parts = fail_parts

    def submit(self, fn, *args):
        self.ran.append(fn.__name__)
        fut = Future()
        try:
            if fn is triage_part and self.fail_parts:
                raise OSError("this part's worker was lost")
            fut.set_result(fn(*args))
        except Exception as err:                    # noqa: BLE001 - as a pool would
            fut.set_exception(err)
        return fut


def test_split_carving_gives_the_records_of_one_process(fleet, monkeypatch):
    jobs = discover(fleet)
    alone = sorted((triage_vm(j) for j in jobs), key=triage_run.record_order)
    assert len(alone) == 3 and all(r["verdict"] != "unreadable" for r in alone)
    monkeypatch.setattr(carve, "CHUNK", 8 << 20)                  # 8 MiB chunks: many parts
    pool = Inline()
    split = sorted(_drive(pool.submit, _Completed(), jobs, 2, 0, None), key=triage_run.record_order)
    assert pool.ran.count("triage_part") >= 3 * 2                 # every VM's carving was split
    assert split == alone
    failing = Inline(fail_parts=True)
    again = sorted(_drive(failing.submit, _Completed(), jobs, 2, 0, None), key=triage_run.record_order)
    assert again == alone                                         # the VM carved by itself


def test_split_on_a_real_pool(fleet):
    jobs = discover(fleet)
    assert run_local(jobs, 2, split_from=0) == run_local(jobs, 1)


def test_small_dumps_are_not_split(fleet):
    pool = Inline()
    _drive(pool.submit, _Completed(), discover(fleet), 2, triage_run.SPLIT_CARVE_BYTES, None)
    assert set(pool.ran) == {"triage_step"}

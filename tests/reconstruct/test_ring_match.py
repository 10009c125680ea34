"""Matching carved rings to QEMU's queues, and ``vdecode qmp`` with a log whose ring addresses
are stale (rewritten to pages that hold no ring, as after a driver reset; packed queues too):
the element and status replies of those queues must still be QEMU's (truth.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from vdecode.space.open import open_dump
from vdecode.reconstruct.rings.match import group_by_device
from vdecode.virtio.carve import carve_guest_rings
from vdecode.virtio.ring_checks import check_packed_ring, check_ring

VDECODE = [sys.executable, "-m", "vdecode"]


def _stale_log(capture, tmp_path, space, only_queue: int | None = None):
    """The early log with every split queue's (or every queue ``only_queue``'s)
    vring-desc/avail/used moved to pages that hold no ring; returns the path and the
    ``(path, queue)`` pairs rewritten."""
    bad = (b for b in range(0x1000000, 0x2000000, 0x3000)
           if all(check_ring(space, k, b, b + 16 * k, b + 0x2000) is None
                  and check_packed_ring(space, k, b, b + 16 * k, b + 0x2000) is None
                  for k in (8, 32, 64, 128, 256)))
    out, changed, requests = tmp_path / "stale-early.jsonl", set(), {}
    with open(capture.log("early")) as src, open(out, "w") as dst:
        for line in src:
            rec = json.loads(line)
            msg = rec["msg"]
            if rec["dir"] == "->" and "id" in msg:
                requests[msg["id"]] = msg
            req = requests.get(msg.get("id")) if rec["dir"] == "<-" else None
            if req and req["execute"] == "x-query-virtio-queue-status" and "return" in msg:
                r = msg["return"]
                if r.get("vring-desc") \
                        and only_queue in (None, req["arguments"]["queue"]):
                    b = next(bad)
                    r["vring-desc"], r["vring-avail"], r["vring-used"] = b, b + 16 * r["vring-num"], b + 0x2000
                    changed.add((req["arguments"]["path"], req["arguments"]["queue"]))
            dst.write(json.dumps(rec) + "\n")
    return out, changed


@pytest.mark.parametrize("only_queue", [None, 0], ids=["all-queues", "queue-0"])
def test_stale_log_answers_like_qemu(capture, tmp_path, only_queue):
    dump = capture.dump("elf")
    with open_dump(dump) as opened:
        log, changed = _stale_log(capture, tmp_path, opened.space, only_queue)
        guest_le = opened.guest_little_endian
    # every device's queue(s): at least five, on a capture of fewer devices each of them
    devices = {d["path"] for q, r in capture.truth if q.get("execute") == "x-query-virtio"
               for d in r.get("return", [])}
    assert len(changed) >= min(5, len(devices))
    asked = [(q, r) for q, r in capture.truth
             if q.get("execute") in ("x-query-virtio-queue-element", "x-query-virtio-queue-status")
             and (q["arguments"]["path"], q["arguments"].get("queue")) in changed]
    stdin = "".join(json.dumps(x) + "\n" for x in
                    [{"execute": "qmp_capabilities"}] + [dict(q, id=i) for i, (q, _) in enumerate(asked)])
    run = subprocess.run([*VDECODE, "qmp", str(dump), "--log", str(log)], input=stdin,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    replies = [json.loads(x) for x in run.stdout.splitlines() if x.strip()]
    replies = [x for x in replies if x.get("id") is not None]
    assert len(replies) == len(asked)
    for reply in replies:
        req, want = asked[reply.pop("id")]
        assert json.dumps(reply) == json.dumps(want), req
    notes = [x for x in run.stderr.splitlines() if "using the carved ring" in x]
    assert len(notes) == len(changed)
    assert all("driver queue index" in n for n in notes)
    if only_queue is None and not guest_le:
        # a big-endian guest's bundle keeps the rings of both byte orders the carver found
        # (its legacy ring big-endian): the bundle alone answers the same
        vdb = tmp_path / "stale.vdb"
        made = subprocess.run([*VDECODE, "bundle", str(dump), "--log", str(log), "-o", str(vdb)],
                              capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr
        again = subprocess.run([*VDECODE, "qmp", str(vdb)], input=stdin, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0 and again.stdout == run.stdout, again.stderr[-800:]


def test_no_log_groups_rings_by_device(capture):
    """Every driver device becomes one group holding exactly its queues, typed as QEMU names the
    device wherever the buffers (not the driver's queue names) tell."""
    names = {req["arguments"]["path"]: rep["return"]["name"] for req, rep in capture.truth
             if req.get("execute") == "x-query-virtio-status" and "return" in rep}
    queues: dict[str, set[int]] = {}
    for req, rep in capture.truth:
        if req.get("execute") == "x-query-virtio-queue-status" and "return" in rep \
                and rep["return"]["vring-desc"] and "packed" not in req["arguments"]["path"]:
            # (packed rings are carved too, but their buffers are not classified)
            queues.setdefault(req["arguments"]["path"], set()).add(rep["return"]["vring-desc"])
    with open_dump(capture.dump("elf")) as opened:
        rings = [replace(r, name=None) for r in
                 carve_guest_rings(opened.space, guest_little_endian=opened.guest_little_endian)]
        groups = group_by_device(opened.space, rings)
    typed = 0
    for path, descs in queues.items():
        (group,) = [g for g in groups if {r.desc for r in g.rings} & descs]
        assert {r.desc for r in group.rings} == descs and group.device_va is not None
        assert group.kind in (names[path], None)
        typed += group.kind == names[path]
    assert typed >= len(queues) - 1          # all but virtio-rng (bare writable buffers)
    # the firmware's boot-time rings (no driver struct) are typed from their buffers alone
    # (SeaBIOS's; the other targets' guests booted with -kernel: no firmware drove a device)
    if capture.arch == "x86_64":
        assert {g.kind for g in groups if g.device_va is None} >= {"virtio-blk", "virtio-scsi"}


# full recordings (tools/capture) live outside the repository; VDECODE_NEW_CAPTURES names their folder
RECORDED = Path(os.environ["VDECODE_NEW_CAPTURES"]) if os.environ.get("VDECODE_NEW_CAPTURES") else None


def _replies_unlike_qemu(folder: Path) -> tuple[list[dict], str]:
    """``vdecode qmp dump.elf --log early.jsonl`` on every request of ``truth.json``: the requests
    whose reply is not QEMU's, and stderr."""
    truth = json.loads((folder / "truth.json").read_text())["exchanges"]
    stdin = "".join(json.dumps(x) + "\n" for x in
                    [{"execute": "qmp_capabilities"}] + [dict(q, id=i) for i, (q, _) in enumerate(truth)])
    run = subprocess.run([*VDECODE, "qmp", str(folder / "dump.elf"), "--log", str(folder / "early.jsonl")],
                         input=stdin, capture_output=True, text=True, timeout=300)
    replies = {}
    for line in run.stdout.splitlines():
        obj = json.loads(line)
        if isinstance(obj.get("id"), int):
            replies[obj.pop("id")] = obj
    bad = [truth[i][0] for i in range(len(truth)) if json.dumps(replies.get(i)) != json.dumps(truth[i][1])]
    return bad, run.stderr


@pytest.mark.parametrize("case", ["reset", "resetstale", "reboot"])
def test_recorded_driver_reset(case):
    """Real driver resets (tools/capture scenarios reset.json, reboot.json; the recordings are
    too big for the repository, so this runs where they were recorded). ``reset``/``resetstale``:
    after the early log the guest rebound virtio-blk and virtio-rng (new rings) and unbound
    virtio-balloon for good (QEMU reset it); ``resetstale`` without init_on_free, so freed rings
    keep their contents. ``reboot``: every driver set up new rings, pages reused across queues.
    With the early log, every reply must be QEMU's."""
    if RECORDED is None:
        pytest.skip("needs full recordings: set VDECODE_NEW_CAPTURES=DIR (tools/capture/make_captures.sh "
                    "DIR tools/capture/scenarios/{reset,resetstale,reboot}.json)")
    folder = RECORDED / case
    if not (folder / "dump.elf").exists():
        pytest.skip(f"{folder} has no recording of {case}")
    bad, stderr = _replies_unlike_qemu(folder)
    assert bad == [], bad[:5]
    assert "using the carved ring" in stderr


SLIM = Path(__file__).resolve().parent.parent / "data" / "carve"


@pytest.mark.parametrize("case", ["reset", "resetstale", "reboot"])
def test_slim_driver_reset_captures(case, tmp_path):
    """The same recordings cut down to the pages the answers need (tests/data/carve/README.md):
    with the early log, every reply is QEMU's."""
    folder = tmp_path / case
    folder.mkdir()
    for name in ("dump.elf", "early.jsonl", "truth.json"):
        with open(SLIM / case / f"{name}.zst", "rb") as src, open(folder / name, "wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
    bad, stderr = _replies_unlike_qemu(folder)
    assert bad == [], bad[:5]
    notes = stderr.splitlines()
    assert any("using the carved ring" in n for n in notes)
    if case.startswith("reset"):
        assert any("balloon0" in n and "the driver let go of it" in n for n in notes)

"""Matching carved rings to QEMU's queues, and ``vdecode qmp`` with a log whose ring addresses
are stale (rewritten to pages that hold no ring, as after a driver reset): the element and
status replies of those queues must still be QEMU's (truth.json)."""

from __future__ import annotations

import json
import subprocess
import sys

from vdecode.space.open import open_dump
from vdecode.reconstruct.ring_match import group_by_device
from vdecode.virtio.carve import carve_rings, check_ring

VDECODE = [sys.executable, "-m", "vdecode"]


def _stale_log(capture, tmp_path, space):
    """The early log with every split queue's vring-desc/avail/used moved to pages that hold
    no ring; returns the path and the ``(path, queue)`` pairs rewritten."""
    bad = (b for b in range(0x1000000, 0x2000000, 0x3000)
           if all(check_ring(space, k, b, b + 16 * k, b + 0x2000) is None for k in (8, 32, 64, 128, 256)))
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
                if r.get("vring-desc") and "packed" not in req["arguments"]["path"]:
                    b = next(bad)
                    r["vring-desc"], r["vring-avail"], r["vring-used"] = b, b + 16 * r["vring-num"], b + 0x2000
                    changed.add((req["arguments"]["path"], req["arguments"]["queue"]))
            dst.write(json.dumps(rec) + "\n")
    return out, changed


def test_stale_log_answers_like_qemu(capture, tmp_path):
    dump = capture.dump("elf")
    with open_dump(dump) as opened:
        log, changed = _stale_log(capture, tmp_path, opened.space)
    assert len(changed) > 10
    asked = [(q, r) for q, r in capture.truth
             if q.get("execute") in ("x-query-virtio-queue-element", "x-query-virtio-queue-status")
             and (q["arguments"]["path"], q["arguments"]["queue"]) in changed]
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


def test_no_log_groups_rings_by_device(capture):
    with open_dump(capture.dump("elf")) as opened:
        rings = carve_rings(opened.space)
        groups = group_by_device(opened.space, rings)
        kinds = {g.kind for g in groups}
        assert "virtio-blk" in kinds and "virtio-net" in kinds
        blk = [g for g in groups if g.kind == "virtio-blk"]
        # the guest driver's device(s), plus the firmware's boot-time rings (no driver struct)
        assert any(g.device_va is not None for g in blk)

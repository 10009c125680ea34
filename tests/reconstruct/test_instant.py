"""Rules that move a logged state to the dump instant, on a real capture whose early log is edited
to show what the captures do not (vhost, no EVENT_IDX). The dump stays the real one."""

import json

import pytest

from vdecode.reconstruct.state.session import build_machine, make_monitor, profile_for
from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log
from vdecode.space.open import open_dump

NET = "/machine/peripheral-anon/device[1]/virtio-backend"
BLK = "/machine/peripheral-anon/device[0]/virtio-backend"
EVENT_IDX = "VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled"


def _edited_log(src, dst, edit):
    pending = {}
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            rec = json.loads(line)
            msg = rec["msg"]
            if rec["dir"] == "->":
                pending[msg.get("id")] = msg
            elif "return" in msg and msg.get("id") in pending:
                edit(pending[msg["id"]], msg["return"])
            out.write(json.dumps(rec) + "\n")
    return dst


def _session(capture, log_path):
    knowledge = LogKnowledge.from_log(read_qmp_log(log_path))
    dump = open_dump(capture.dump("elf"))
    profile = profile_for(knowledge, None)
    machine, notes = build_machine(dump, knowledge, profile)
    mon = make_monitor(machine, profile, knowledge.qemu_version, knowledge.qemu_package)
    mon.handle({"execute": "qmp_capabilities"})

    def ask(cmd, **args):
        reply = mon.handle({"execute": cmd, "arguments": args})
        return reply.get("return", reply)
    return ask, notes


@pytest.fixture()
def basic(captures):
    return captures["basic"]


def test_vhost_device_is_stopped_by_the_dump_and_its_counters_synced(basic, tmp_path):
    def edit(req, ret):
        args = req.get("arguments", {})
        if req["execute"] == "x-query-virtio-status" and args.get("path") == NET:
            ret["vhost-started"] = True
            ret["vhost-dev"] = {"n-mem-sections": 4, "n-tmp-sections": 4, "nvqs": 2,
                                "vq-index": 0, "features": {"transports": [], "dev-features": []},
                                "acked-features": {"transports": [], "dev-features": []},
                                "backend-features": {"transports": [], "dev-features": []},
                                "protocol-features": {"protocols": []}, "max-queues": 1,
                                "backend-cap": 2, "log-enabled": False, "log-size": 0}
        if req["execute"] == "x-query-virtio-queue-status" and args.get("path") == NET:
            ret.pop("shadow-avail-idx", None)
            ret["last-avail-idx"] = 0
    ask, _ = _session(basic, _edited_log(basic.log("early"), tmp_path / "vhost.jsonl", edit))
    status = ask("x-query-virtio-status", path=NET)
    assert status["vhost-started"] is False and "vhost-dev" not in status
    assert ask("x-query-virtio-vhost-queue-status", path=NET, queue=0)["error"]["desc"] == \
        "Error: vhost device has not started yet"
    q = ask("x-query-virtio-queue-status", path=NET, queue=1)
    assert q["used-idx"] == 13 and q["last-avail-idx"] == q["shadow-avail-idx"] == 13
    assert q["signalled-used-valid"] is False


def test_without_event_idx_signalled_used_is_zero_and_invalid(basic, tmp_path):
    def edit(req, ret):
        if req["execute"] == "x-query-virtio-status" and req["arguments"]["path"] == BLK:
            ret["guest-features"]["transports"].remove(EVENT_IDX)
    ask, _ = _session(basic, _edited_log(basic.log("early"), tmp_path / "noevt.jsonl", edit))
    q = ask("x-query-virtio-queue-status", path=BLK, queue=0)
    assert (q["used-idx"], q["signalled-used"], q["signalled-used-valid"]) == (37, 0, False)


def test_a_queue_that_did_not_move_keeps_the_logged_shadow(basic):
    ask, _ = _session(basic, basic.log("early"))
    serial = "/machine/peripheral-anon/device[3]/virtio-backend"
    q = ask("x-query-virtio-queue-status", path=serial, queue=2)
    # guest posted 34, QEMU last read 32 (real QEMU said 32 at the dump too)
    assert (q["shadow-avail-idx"], q["used-idx"]) == (32, 2)


def test_a_device_unplugged_after_the_log_is_gone(basic, tmp_path):
    log = tmp_path / "unplug.jsonl"
    lines = basic.log("early").read_text().splitlines()
    t = json.loads(lines[-1])["t"] + 1
    for p in ("/machine/peripheral-anon/device[2]/virtio-backend",
              "/machine/peripheral-anon/device[2]"):
        ev = {"timestamp": {"seconds": int(t), "microseconds": 0}, "event": "DEVICE_DELETED",
              "data": {"path": p}}
        lines.append(json.dumps({"t": t, "dir": "<-", "msg": ev}))
    log.write_text("\n".join(lines) + "\n")
    ask, _ = _session(basic, log)
    assert "virtio-rng" not in [d["name"] for d in ask("x-query-virtio")]
    assert ask("x-query-virtio-status", path="/machine/peripheral-anon/device[2]/virtio-backend"
               )["error"]["desc"] == ("Path /machine/peripheral-anon/device[2]/virtio-backend is "
                                      "not a VirtIODevice")


def test_queues_json_rows_take_numbers_and_runs():
    from vdecode.profiles import load_profile
    from vdecode.reconstruct.state.instant import listed
    assert listed(2, [0, 2]) and not listed(1, [0, 2])
    assert listed(0, [[0, 1022, 2]]) and listed(1022, [[0, 1022, 2]])
    assert not listed(3, [[0, 1022, 2]]) and not listed(1024, [[0, 1022, 2]])
    # QEMU 10.0: every virtio-serial receive queue lags like a pop-only one; 7.2: only c_ivq
    rows = {v: load_profile(v).table("queues")["pop_only"]["virtio-serial"]
            for v in ("7.2", "10.0")}
    assert [q for q in range(8) if listed(q, rows["7.2"])] == [2]
    assert [q for q in range(8) if listed(q, rows["10.0"])] == [0, 2, 4, 6]


def test_a_balloon_queue_moving_means_a_config_change_only_for_a_running_driver():
    from vdecode.profiles import load_profile
    from vdecode.reconstruct.state.instant import _config_changed
    from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
    profile = load_profile("10.0")
    logged = {0: VirtQueueState(0, used_idx=0), 1: VirtQueueState(1, used_idx=0)}

    def dev(status: int, features: int = 0) -> VirtIODeviceState:
        return VirtIODeviceState("/machine/peripheral-anon/device[5]/virtio-backend",
                                 name="virtio-balloon", status=status, guest_features=features,
                                 queues=logged)
    inflated = {0: VirtQueueState(0, used_idx=36), 1: VirtQueueState(1, used_idx=0)}
    deflated = {0: VirtQueueState(0, used_idx=0), 1: VirtQueueState(1, used_idx=5)}
    assert _config_changed(dev(0xF), inflated, profile)
    assert not _config_changed(dev(0xB), inflated, profile)          # no DRIVER_OK at the log
    assert _config_changed(dev(0xF), deflated, profile)
    assert not _config_changed(dev(0xF, 1 << 2), deflated, profile)  # DEFLATE_ON_OOM
    assert not _config_changed(dev(0xF), logged, profile)            # nothing moved


def test_a_ring_full_at_the_dump_was_filled_after_qemus_last_read():
    """virtio-net pops after every read that finds buffers, so QEMU never read a ring in the full
    state the dump shows: the logged shadow stays when it covers every pop since (a receive ring
    the guest refilled after the last packet: real aarch64 capture a64modern, 1024/33 -> 1057).
    virtio-serial reads its receive queues without popping (a chardev's poll): not listed."""
    from vdecode.profiles import load_profile
    for v in ("7.2", "10.0", "11.1"):
        rows = load_profile(v).table("queues")["reads_only_to_pop"]
        assert set(rows) == {"virtio-net"}, v
    from vdecode.reconstruct.state.instant import _full_since_last_read
    from vdecode.virtio.device import RingHeader

    def full(avail, used, last, shadow, num=1024):
        return _full_since_last_read(RingHeader(0, avail, 0, used), num, last, shadow)

    assert full(1057, 33, 33, 1024)
    assert not full(1056, 33, 33, 1024)            # not full: QEMU may have read 1056
    assert not full(1057, 33, 33, 1057)            # the logged shadow is the dump's avail idx
    assert not full(1057, 33, 33, 32)              # behind the pops since: QEMU read again
    assert not full(1057, 32, 33, 1024)            # one buffer in use
    assert full(5, 65517, 65517, 0, num=24)        # across the 16-bit wrap
    assert not full(1057, 33, 33, None)

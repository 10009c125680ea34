"""``vdecode record``: the flight recorder, against a real QEMU started here (TCG, no guest OS)
and against a fake QMP server replying as QEMU 11.1.3 and 7.2 with vhost devices would.

What must hold: the rolling log is read back by ``vdecode qmp --log`` after the VM is killed and
answers what QEMU said; the files rotate only between snapshots and each starts with the header;
the recorder never asks what changes QEMU (``formats/qemu-*/record.json``) and says what it
skipped and why; it ends cleanly on SIGTERM and when QEMU goes away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vdecode.record.rolling import RollingLog

QEMU = shutil.which("qemu-system-x86_64")
NO_QEMU = "no qemu-system-x86_64 on PATH (Debian: apt-get install qemu-system-x86; .ci/run does)"
VDECODE = [sys.executable, "-m", "vdecode"]


# --- helpers -------------------------------------------------------------------------------------

def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def snapshots_in(path: Path) -> int:
    """Snapshots in a log file: each starts with the recorder's query-status."""
    return sum(1 for r in records(path) if r["dir"] == "->" and r["msg"]["execute"] == "query-status")


def test_a_rotating_file_is_never_missing(tmp_path):
    # a reader polling FILE while the recorder rotates it always finds it (the rename-then-create
    # rotation left a moment without it)
    path = tmp_path / "r.jsonl"
    log = RollingLog(str(path), max_size=2000, keep=1)
    log.start([(1.0, "<-", {"QMP": {}})])
    snap = [(2.0, "->", {"execute": "x", "id": i}) for i in range(10)]
    done, misses = threading.Event(), []

    def reader() -> None:
        while not done.is_set():
            try:
                os.stat(path)
            except FileNotFoundError:
                misses.append(1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(3000):
            log.append(snap, snapshot=True)
    finally:
        done.set()
        t.join()
        log.close()
    assert misses == [] and log.rotations >= 1000
    assert "QMP" in records(path)[0]["msg"] and not Path(f"{path}.new").exists()


def assert_complete(path: Path) -> None:
    """Every command in the file has its reply, and the file ends with one."""
    recs = records(path)
    asked = {r["msg"]["id"] for r in recs if r["dir"] == "->"}
    answered = {r["msg"]["id"] for r in recs if r["dir"] == "<-" and "id" in r["msg"]}
    assert asked == answered, f"{path.name}: commands without a reply: {sorted(asked - answered)}"
    assert recs[-1]["dir"] == "<-"


def newest_exchanges(paths: list[Path]) -> dict[str, tuple[dict, dict]]:
    """``(command, reply)`` of the newest exchange of each (command, arguments), x-query only."""
    out: dict[str, tuple[dict, dict]] = {}
    for path in paths:
        sent: dict = {}
        for r in records(path):
            m = r["msg"]
            if r["dir"] == "->":
                sent[m["id"]] = m
            elif "id" in m and m["id"] in sent and sent[m["id"]]["execute"].startswith("x-query"):
                c = sent[m["id"]]
                out[json.dumps([c["execute"], c.get("arguments")])] = (c, m)
    return out


def replay(logs: list[Path], commands: list[dict]) -> tuple[list[dict], str]:
    """``vdecode qmp --log ...`` (no dump) answering ``commands``: its replies and stderr."""
    lines = [json.dumps({"execute": "qmp_capabilities"}), *map(json.dumps, commands)]
    args = [a for p in logs for a in ("--log", str(p))]
    run = subprocess.run([*VDECODE, "qmp", *args], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    replies = [json.loads(x) for x in run.stdout.splitlines()]
    return replies[2:], run.stderr


class Qmp:
    """A plain QMP client (for the test's own questions on QEMU's other monitor)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        assert "QMP" in self._read()
        self.ask("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                return msg

    def ask(self, command: str, **arguments) -> dict:
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.file.write(json.dumps(msg).encode() + b"\r\n")
        self.file.flush()
        return self._read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def wait_for(cond, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- a real QEMU -----------------------------------------------------------------------------

@pytest.fixture
def qemu(tmp_path):
    """QEMU 7.2+ under TCG with virtio-blk (null-co), virtio-net (user) and virtio-rng, running
    (no guest OS: SeaBIOS finds nothing to boot; QMP answers for the devices all the same), with
    two QMP monitors: ``a.sock`` for the recorder, ``b.sock`` for the test."""
    if QEMU is None:
        pytest.skip(NO_QEMU)
    a, b = tmp_path / "a.sock", tmp_path / "b.sock"
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-m", "64",
         "-drive", "if=none,id=d0,driver=null-co,size=64M", "-device", "virtio-blk-pci,drive=d0",
         "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
         "-device", "virtio-rng-pci",
         "-qmp", f"unix:{a},server=on,wait=off", "-qmp", f"unix:{b},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: a.exists() and b.exists() or proc.poll() is not None, 30, "QEMU's sockets")
        if proc.poll() is not None:
            pytest.fail(f"QEMU did not start: {proc.stderr.read().decode()[:500]}")
        yield proc, a, b
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()


def test_records_a_real_qemu_and_reads_back_after_it_is_killed(qemu, tmp_path):
    proc, a, b = qemu
    log = tmp_path / "rec.jsonl"
    # small files: a snapshot of these 3 devices is ~8 KB, so the files rotate while recording
    rec = subprocess.Popen([*VDECODE, "record", str(a), "-o", str(log), "--interval", "0.2",
                            "--max-size", "48k", "--keep", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: Path(f"{log}.2").exists() and snapshots_in(log) >= 1 or
                 rec.poll() is not None, 60, "two rotations")
        proc.send_signal(signal.SIGKILL)        # the VM dies: no goodbye on the monitor
        proc.wait()
        out, err = rec.communicate(timeout=30)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait()
    assert rec.returncode == 0, err
    assert "stopped: QEMU went away" in err and "Traceback" not in err
    files = [Path(f"{log}.2"), Path(f"{log}.1"), log]
    total = sum(p.stat().st_size for p in files)
    one = max(p.stat().st_size for p in files)
    assert total <= 48 * 1024 + one                 # the bound, give or take the snapshot in hand
    assert not Path(f"{log}.3").exists()
    for p in files:                                 # each file: header, then whole snapshots
        recs = records(p)
        assert "QMP" in recs[0]["msg"] and recs[0]["msg"]["QMP"]["version"]["qemu"]["major"] >= 7
        assert snapshots_in(p) >= 1
        assert_complete(p)
    asked = {r["msg"]["execute"] for p in files for r in records(p) if r["dir"] == "->"}
    assert "x-query-virtio-queue-element" not in asked
    assert {"x-query-virtio", "x-query-virtio-status", "x-query-virtio-queue-status"} <= asked

    # read back with no dump: every newest question answered as QEMU answered it
    newest = newest_exchanges(files)
    names = {d["name"] for c, r in newest.values() if c["execute"] == "x-query-virtio"
             for d in r["return"]}
    assert names == {"virtio-blk", "virtio-net", "virtio-rng"}
    assert sum(c["execute"] == "x-query-virtio-queue-status" for c, _ in newest.values()) == 5
    got, err = replay(files, [c for c, _ in newest.values()])
    want = [r for _, r in newest.values()]
    assert got == want
    assert "no dump" in err
    # the newest file alone answers too (it has a header and whole snapshots)
    got_alone, _ = replay([log], [c for c, _ in newest.values()])
    assert got_alone == want


def test_the_log_holds_what_qemu_says_and_ends_whole_on_sigterm(qemu, tmp_path):
    proc, a, b = qemu
    log = tmp_path / "rec.jsonl"
    rec = subprocess.Popen([*VDECODE, "record", str(a), "-o", str(log), "--interval", "0.2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: snapshots_in(log) >= 3 if log.exists() else rec.poll() is not None,
                 60, "three snapshots")
        rec.send_signal(signal.SIGTERM)
        out, err = rec.communicate(timeout=30)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait()
    assert rec.returncode == 0 and "stopped: SIGTERM" in err, err
    assert_complete(log)
    assert proc.poll() is None                      # the recorder left QEMU running
    # QEMU, asked now on its other monitor, says what the log says (no driver: nothing moves)
    mon = Qmp(b)
    dump = tmp_path / "dump.elf"
    try:
        newest = newest_exchanges([log])
        for command, reply in newest.values():
            now = mon.ask(command["execute"], **command.get("arguments", {}))
            assert now["return"] == reply["return"], command
        # and with a dump of the VM, the log is read beside it as any earlier log
        assert "return" in mon.ask("dump-guest-memory", paging=False, protocol=f"file:{dump}")
    finally:
        mon.close()
    commands = [c for c, _ in newest.values() if c["execute"] != "x-query-virtio-status"]
    lines = [json.dumps({"execute": "qmp_capabilities"}), *map(json.dumps, commands)]
    run = subprocess.run([*VDECODE, "qmp", str(dump), "--log", str(log)],
                         input="\n".join(lines) + "\n", capture_output=True, text=True,
                         timeout=120, env={**os.environ, "VDECODE_CACHE": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr
    got = [json.loads(x) for x in run.stdout.splitlines()][2:]
    # no driver ever ran: nothing moved between the log and the dump
    assert got == [newest[json.dumps([c["execute"], c.get("arguments")])][1] for c in commands]


FAKE_VIRSH = """#!{python}
# a stand-in for libvirt's virsh: qemu-monitor-command DOMAIN JSON over QEMU's own QMP socket
import json, socket, sys
args = sys.argv[1:]
assert args[0] == "qemu-monitor-command" and args[1] == "vm1", args
try:
    s = socket.socket(socket.AF_UNIX); s.connect({sock!r})
except OSError:
    sys.stderr.write("error: Requested operation is not valid: domain is not running\\n")
    sys.exit(1)
f = s.makefile("rwb")
def read():
    while True:
        m = json.loads(f.readline())
        if "event" not in m:
            return m
read()
f.write(b'{{"execute": "qmp_capabilities"}}\\r\\n'); f.flush(); read()
msg = json.loads(args[2]); msg["id"] = "libvirt-42"
f.write(json.dumps(msg).encode() + b"\\r\\n"); f.flush()
print(json.dumps(read(), separators=(",", ":")))
"""


def test_virsh_path_records_through_a_fake_virsh(qemu, tmp_path):
    proc, a, b = qemu
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    virsh = bin_dir / "virsh"
    virsh.write_text(FAKE_VIRSH.format(python=sys.executable, sock=str(b)))
    virsh.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "virsh.jsonl"
    run = subprocess.run([*VDECODE, "record", "--virsh", "vm1", "-o", str(log), "--interval",
                          "0.1", "--snapshots", "2"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "virsh domain vm1" in run.stderr and "2 snapshots taken" in run.stderr
    recs = records(log)
    assert "QMP" not in recs[0]["msg"]              # libvirt did the greeting: none to record
    assert recs[0]["msg"]["execute"] == "query-version"
    assert_complete(log)
    assert snapshots_in(log) == 2
    newest = newest_exchanges([log])
    got, err = replay([log], [c for c, _ in newest.values()])
    assert got == [r for _, r in newest.values()]
    assert "QEMU 7.2" in subprocess.run([*VDECODE, "log", str(log)], capture_output=True,
                                        text=True).stdout or "QEMU" in err
    # QEMU gone: virsh says the domain is not running; the recorder ends cleanly
    proc.kill()
    proc.wait()
    b.unlink()
    run = subprocess.run([*VDECODE, "record", "--virsh", "vm1", "-o", str(tmp_path / "v2.jsonl")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 6 and run.stderr.count("\n") == 1, run.stderr
    assert "QEMU closed the monitor before the recording started" in run.stderr


# --- a fake QMP server: the releases and devices where questions are unsafe ---------------------

class FakeQemu(threading.Thread):
    """A QMP server on a unix socket answering as a QEMU of ``version`` with ``devices``
    (``id -> (x-query-virtio name, QOM type, vhost started, queues)``); it records every command
    it gets. Like QEMU 11.1.x, it "aborts" (closes the connection) on ``x-query-virtio-status``
    when ``aborts_on_status``."""

    def __init__(self, path: Path | None, version: tuple[int, int, int], devices: dict,
                 running: bool = True, aborts_on_status: bool = False) -> None:
        super().__init__(daemon=True)
        self.version, self.devices, self.running = version, devices, running
        self.aborts_on_status = aborts_on_status
        self.asked: list[dict] = []
        if path is None:                          # TCP on a free local port
            self.server = socket.socket(socket.AF_INET)
            self.server.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        else:
            self.server = socket.socket(socket.AF_UNIX)
            self.server.bind(str(path))
            self.address = str(path)
        self.server.listen(1)

    def reply(self, msg: dict) -> dict | list | None:
        cmd, args = msg["execute"], msg.get("arguments", {})
        path = args.get("path", "")
        dev = self.devices.get(path.split("/")[-2] if path else "")
        queue = args.get("queue", 0)

        def error(desc: str) -> dict:
            return {"error": {"class": "GenericError", "desc": desc}}

        if cmd == "qmp_capabilities":
            return {}
        if cmd == "query-version":
            major, minor, micro = self.version
            return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": ""}
        if cmd == "query-status":
            return {"status": "running" if self.running else "paused", "running": self.running}
        if cmd == "x-query-virtio":
            return [{"name": d[0], "path": f"/machine/peripheral/{i}/virtio-backend"}
                    for i, d in self.devices.items()]
        if cmd == "qom-get" and args.get("property") == "type":
            return dev[1]
        if cmd == "x-query-virtio-status":
            if self.aborts_on_status:
                return None
            return {"name": dev[0], "num-vqs": dev[3], "vhost-started": dev[2]}
        if cmd == "x-query-virtio-queue-status":
            if queue >= dev[3]:
                return error(f"Invalid virtqueue number {queue}")
            return {"name": dev[0], "queue-index": queue, "inuse": 0}
        if cmd == "x-query-virtio-vhost-queue-status":
            if not dev[2]:
                return error("Error: vhost device has not started yet")
            if queue >= dev[3]:
                return error(f"Invalid vhost virtqueue number {queue}")
            return {"name": dev[0], "num": 256}
        return {"error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"}}

    def run(self) -> None:
        conn, _ = self.server.accept()
        f = conn.makefile("rwb")
        major, minor, micro = self.version
        f.write(json.dumps({"QMP": {"version": {"qemu": {"major": major, "minor": minor,
                                                          "micro": micro}, "package": ""},
                                    "capabilities": ["oob"]}}).encode() + b"\r\n")
        f.flush()
        for line in f:
            msg = json.loads(line)
            self.asked.append(msg)
            ret = self.reply(msg)
            if ret is None:                       # QEMU aborted
                break
            out = ret if isinstance(ret, dict) and "error" in ret else {"return": ret}
            out["id"] = msg.get("id")
            f.write(json.dumps(out).encode() + b"\r\n")
            f.flush()
        conn.close()
        self.server.close()


def record_fake(tmp_path: Path, fake_args: dict, snapshots: int = 2, tcp: str | None = None):
    fake = FakeQemu(None if tcp is not None else tmp_path / "fake.sock", **fake_args)
    fake.start()
    log = tmp_path / "fake.jsonl"
    address = f"{tcp}{fake.address}" if tcp is not None else fake.address
    run = subprocess.run([*VDECODE, "record", address, "-o", str(log), "--interval", "0.1",
                          "--snapshots", str(snapshots)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "300"})
    fake.join(10)
    return run, fake.asked, log


def asked_of(asked: list[dict], command: str, device: str | None = None) -> list[dict]:
    return [m for m in asked if m["execute"] == command and
            (device is None or f"/{device}/" in m.get("arguments", {}).get("path", ""))]


def test_fake_11_1_never_asks_status_nor_a_running_vhost_user_queue(tmp_path):
    run, asked, log = record_fake(tmp_path, dict(
        version=(11, 1, 3), aborts_on_status=True,
        devices={"disk0": ("virtio-blk", "virtio-blk", False, 2),
                 "vu0": ("virtio-blk", "vhost-user-blk", True, 2),       # QEMU's name for it
                 "vu1": ("virtio-blk", "vhost-user-blk", False, 1),      # back-end not started
                 "net0": ("virtio-net", "virtio-net-device", True, 3)}))  # vhost started
    assert run.returncode == 0, run.stderr
    assert asked_of(asked, "x-query-virtio-status") == []           # QEMU 11.1.x would abort
    assert asked_of(asked, "x-query-virtio-queue-element") == []
    for dev in ("vu0", "vu1", "net0"):
        assert asked_of(asked, "x-query-virtio-queue-status", dev) == [], dev
    # the QOM type is asked once a device, not once a snapshot
    assert len(asked_of(asked, "qom-get")) == 4
    # the plain disk: queues counted by asking (0, 1, then 2 errs), each snapshot
    assert [m["arguments"]["queue"] for m in asked_of(asked, "x-query-virtio-queue-status",
                                                      "disk0")] == [0, 1, 2] * 2
    # the started vhost devices: their vhost queues, harmless (queue 0 was the probe)
    assert [m["arguments"]["queue"] for m in asked_of(asked, "x-query-virtio-vhost-queue-status",
                                                      "vu0")] == [0, 1, 2] * 2
    assert [m["arguments"]["queue"] for m in asked_of(asked, "x-query-virtio-vhost-queue-status",
                                                      "net0")] == [0, 1, 2, 3] * 2
    # not started: its queue 0 probe errs once a snapshot, and nothing more is asked of it
    assert [m["arguments"]["queue"] for m in asked_of(asked, "x-query-virtio-vhost-queue-status",
                                                      "vu1")] == [0, 0]
    err = run.stderr
    assert "not asking x-query-virtio-status of /machine/peripheral/disk0/virtio-backend" in err
    assert "QEMU 11.1.x aborts on it" in err
    assert "not asking x-query-virtio-queue-status of /machine/peripheral/vu0/virtio-backend " \
           "(virtio-blk, QOM type vhost-user-blk, VM running): on a device whose vhost " \
           "back-end is started" in err
    assert "/machine/peripheral/net0/virtio-backend (virtio-net, vhost started, VM running): " \
           "as above" in err
    assert "never asks x-query-virtio-queue-element" in err
    # once per device and question, not once per snapshot
    assert err.count("not asking x-query-virtio-status of /machine/peripheral/disk0/") == 1
    assert "Traceback" not in err
    assert_complete(log)


def test_fake_7_2_spares_a_started_vhost_device_only_while_running(tmp_path):
    devices = {"net0": ("virtio-net", "virtio-net-device", True, 3),
               "rng0": ("virtio-rng", "virtio-rng-device", False, 1)}
    run, asked, log = record_fake(tmp_path, dict(version=(7, 2, 22), devices=devices))
    assert run.returncode == 0, run.stderr
    assert len(asked_of(asked, "x-query-virtio-status")) == 4         # 7.2 answers it
    assert asked_of(asked, "x-query-virtio-queue-status", "net0") == []
    assert len(asked_of(asked, "x-query-virtio-vhost-queue-status", "net0")) == 6
    assert len(asked_of(asked, "x-query-virtio-queue-status", "rng0")) == 2
    assert asked_of(asked, "x-query-virtio-vhost-queue-status", "rng0") == []
    assert "(virtio-net, vhost started, VM running)" in run.stderr
    (tmp_path / "fake.sock").unlink()
    # paused: QEMU stopped the vhost back-end, queue status no longer reaches it
    run, asked, log = record_fake(tmp_path, dict(version=(7, 2, 22), devices=devices,
                                                 running=False))
    assert run.returncode == 0, run.stderr
    assert len(asked_of(asked, "x-query-virtio-queue-status", "net0")) == 6
    assert "not asking" not in run.stderr


def test_a_release_without_a_table_gets_the_nearest_and_says_so(tmp_path):
    run, asked, log = record_fake(tmp_path, dict(
        version=(12, 0, 0), aborts_on_status=True,
        devices={"disk0": ("virtio-blk", "virtio-blk", False, 1)}), snapshots=1)
    assert run.returncode == 0, run.stderr
    assert "QEMU 12.0.0 has no profile" in run.stderr and "11.1" in run.stderr
    assert asked_of(asked, "x-query-virtio-status") == []


@pytest.mark.parametrize("prefix", ["", "tcp:"])
def test_a_tcp_monitor(tmp_path, prefix):
    run, asked, log = record_fake(tmp_path, dict(
        version=(10, 0, 2), devices={"rng0": ("virtio-rng", "virtio-rng-device", False, 1)}),
        snapshots=1, tcp=prefix)
    assert run.returncode == 0, run.stderr
    assert "QEMU 10.0.2 at " + prefix + "127.0.0.1:" in run.stderr
    assert len(asked_of(asked, "x-query-virtio-queue-status", "rng0")) == 1
    assert_complete(log)


def test_qemu_aborting_mid_snapshot_leaves_the_last_whole_snapshot(tmp_path):
    # 10.0 has no abort rule: the fake aborts on its first status question, in snapshot 1
    run, asked, log = record_fake(tmp_path, dict(
        version=(10, 0, 2), aborts_on_status=True,
        devices={"disk0": ("virtio-blk", "virtio-blk", False, 1)}))
    assert run.returncode == 0, run.stderr
    assert "stopped: QEMU went away" in run.stderr and "0 snapshots" in run.stderr
    recs = records(log)                       # the header only: no half snapshot
    assert [r["msg"].get("execute") for r in recs if r["dir"] == "->"] == \
        ["qmp_capabilities", "query-version"]


# --- a real recording, in the repository (runs without QEMU) ---------------------------------

RECORDED = Path(__file__).resolve().parent / "data" / "record"


def test_a_real_recording_reads_back_as_qemu_answered():
    files = [RECORDED / "vm1-virtio.jsonl.1", RECORDED / "vm1-virtio.jsonl"]
    for p in files:
        assert "QMP" in records(p)[0]["msg"] and snapshots_in(p) >= 2
        assert_complete(p)
    newest = newest_exchanges(files)
    assert len(newest) == 9                         # 3 devices: list, 3 status, 5 queues
    used = [r["return"]["used-idx"] for c, r in newest.values()
            if c["execute"] == "x-query-virtio-queue-status"]
    assert max(used) > 1000                         # the disk loop moved its queue
    got, err = replay(files, [c for c, _ in newest.values()])
    assert got == [r for _, r in newest.values()]
    assert "no dump: QEMU's state as of the log's last replies (2026-12-07 23:30:04 UTC)" in err
    # an older snapshot's answer is not what a log-only monitor gives: the newest wins
    older = newest_exchanges(files[:1])
    moved = [k for k in older if older[k][1] != newest[k][1]]
    assert moved, "the disk's queue moved between the files"


# --- the files ---------------------------------------------------------------------------------

def test_rolling_log_rotates_between_snapshots_only(tmp_path):
    path = tmp_path / "r.jsonl"
    log = RollingLog(str(path), max_size=3000, keep=2)
    log.start([(1.0, "<-", {"QMP": {"version": {}}})])
    snap = [(2.0 + i, "->", {"execute": "x", "id": i}) for i in range(12)]   # ~600 bytes
    for n in range(10):
        log.append(snap, snapshot=True)
        log.append([(3.0, "<-", {"event": "E"})], snapshot=False)
    log.close()
    files = log.files()
    assert [Path(f).name for f in files] == ["r.jsonl.2", "r.jsonl.1", "r.jsonl"]
    for f in files:
        recs = records(Path(f))
        assert "QMP" in recs[0]["msg"]
        body = recs[1:]
        assert len(body) % 13 == 0 and body                    # whole snapshots (+ their event)
        assert Path(f).stat().st_size <= 1000 + 700
    assert log.rotations >= 3


def test_a_snapshot_larger_than_a_file_still_gets_one(tmp_path):
    path = tmp_path / "r.jsonl"
    log = RollingLog(str(path), max_size=200, keep=1)
    log.start([(1.0, "<-", {"QMP": {}})])
    big = [(2.0, "->", {"execute": "x" * 300, "id": 1})]
    log.append(big, snapshot=True)
    log.append(big, snapshot=True)
    log.close()
    for f in log.files():
        assert len(records(Path(f))) == 2


# --- errors: one line each ----------------------------------------------------------------------

@pytest.mark.parametrize("args,status,text", [
    (["record", "{tmp}/none.sock", "-o", "{tmp}/x.jsonl"], 6, "cannot connect to the QMP monitor"),
    (["record", "-o", "{tmp}/x.jsonl"], 2, "give a QMP socket or --virsh DOMAIN"),
    (["record", "{tmp}/s", "--virsh", "d", "-o", "{tmp}/x.jsonl"], 2, "one of them"),
    (["record", "{tmp}/s", "-o", "{tmp}/x.jsonl", "--max-size", "1k"], 2, "too small"),
    (["record", "{tmp}/s", "-o", "{tmp}/x.jsonl", "--max-size", "lots"], 2, "not a size"),
    (["record", "{tmp}/s", "-o", "{tmp}/nodir/x.jsonl"], 2, "does not exist"),
    (["qmp"], 2, "give a DUMP, or --log LOG"),
])
def test_errors_are_one_line(tmp_path, args, status, text):
    run = subprocess.run([*VDECODE, *(a.format(tmp=tmp_path) for a in args)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == status, run.stderr
    assert run.stderr.startswith("vdecode: error: ") and run.stderr.count("\n") == 1, run.stderr
    assert text in run.stderr


def test_no_greeting_says_another_client_may_hold_the_monitor(tmp_path):
    sock = tmp_path / "busy.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.listen(1)                          # accepts in the backlog, never greets (QEMU busy)
    try:
        run = subprocess.run([*VDECODE, "record", str(sock), "-o", str(tmp_path / "x.jsonl"),
                              "--timeout", "0.5"], capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert run.returncode == 6 and run.stderr.count("\n") == 1, run.stderr
    assert "no reply from QEMU in 0.5 s" in run.stderr and "second -qmp" in run.stderr

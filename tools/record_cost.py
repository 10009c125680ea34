#!/usr/bin/env python3
"""What ``vdecode record`` costs a guest: a disk loop's latency with and without it (docs/record.md).

usage: record_cost.py KERNEL INITRD [--rounds N] [--count N] [--interval S] [--work DIR]

Boots the captures' guest (a Debian cloud kernel and the busybox initramfs of
``shared/capture/build_initramfs.sh``) under TCG with a virtio-blk (``null-co``: no host disk in the
measure, only the virtio path), a virtio-net and a virtio-rng, and two QMP monitors. In the guest,
``dd if=/dev/zero of=/dev/vda bs=4096 count=N oflag=direct`` runs in rounds, alternately without
and with ``vdecode record --interval S`` on the second monitor (alternating, so a slow moment of
the host falls on both). Prints per-round dd times, the per-write mean, and the recorder's
snapshot durations (first question to last reply, from its own log: QEMU's main loop answers them
holding its big lock, the only way the recorder can delay the guest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kernel")
    ap.add_argument("initrd")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="record-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in ("console.log", "ctl.sock", "a.sock", "b.sock"):     # a run before in this folder
        (work / old).unlink(missing_ok=True)
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "256",
         "-nodefaults", "-display", "none", "-kernel", a.kernel, "-initrd", a.initrd,
         "-append", "console=ttyS0 quiet panic=-1",
         "-serial", f"file:{work}/console.log",
         "-chardev", f"socket,id=ctl,path={work}/ctl.sock,server=on,wait=off",
         "-serial", "chardev:ctl",
         "-drive", "if=none,id=d0,driver=null-co,size=1G", "-device", "virtio-blk-pci,drive=d0",
         "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
         "-device", "virtio-rng-pci",
         "-qmp", f"unix:{work}/a.sock,server=on,wait=off",
         "-qmp", f"unix:{work}/b.sock,server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while b"VDECODE-GUEST-READY" not in _read(work / "console.log"):
            if time.time() > deadline or qemu.poll() is not None:
                print("the guest did not boot", file=sys.stderr)
                return 1
            time.sleep(0.5)
        ctl = socket.socket(socket.AF_UNIX)
        ctl.connect(str(work / "ctl.sock"))
        ctl.settimeout(600)
        shell(ctl, "echo ready")
        times: dict[bool, list[float]] = {False: [], True: []}
        snaps: list[tuple[float, float]] = []
        cpu: list[float] = []                       # the recorder's CPU seconds, each round
        counts: list[int] = []                      # its snapshots, each round
        for r in range(a.rounds * 2):
            with_rec = r % 2 == 1
            rec = None
            if with_rec:
                log = work / f"rec{r}.jsonl"
                rec = subprocess.Popen([sys.executable, "-m", "vdecode", "record",
                                        str(work / "a.sock"), "-o", str(log), "--interval",
                                        str(a.interval)], stderr=subprocess.DEVNULL)
                time.sleep(2 * a.interval)          # connected and snapshotting
            # busybox dd does not time itself, and its date has no %N: the guest's uptime
            # (10 ms steps) around it, on runs of seconds
            out = shell(ctl, f"a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero of=/dev/vda "
                             f"bs=4096 count={a.count} oflag=direct 2>/dev/null; "
                             f"b=$(cut -d' ' -f1 /proc/uptime); echo took $a $b")
            if rec is not None:
                rec.send_signal(signal.SIGTERM)
                _, status, usage = os.wait4(rec.pid, 0)
                rec.returncode = os.waitstatus_to_exitcode(status)
                cpu.append(usage.ru_utime + usage.ru_stime)
                snaps += snapshot_durations(log)
                counts.append(len(snapshot_durations(log)))
            m = re.search(r"^took ([0-9.]+) ([0-9.]+)", out, re.M)
            if not m:
                print(f"dd said: {out!r}", file=sys.stderr)
                return 1
            took = float(m.group(2)) - float(m.group(1))
            times[with_rec].append(took)
            print(f"round {r // 2 + 1} {'with   ' if with_rec else 'without'} the recorder: "
                  f"dd {took:.2f} s")
        for w in (False, True):
            t = sorted(times[w])
            q1 = t[len(t) // 4]
            print(f"{'with   ' if w else 'without'} the recorder: {a.count} writes in min "
                  f"{t[0]:.2f} s, lower quartile {q1:.2f} s, median {statistics.median(t):.2f} s "
                  f"({1e6 * t[0] / a.count:.0f}, {1e6 * q1 / a.count:.0f}, "
                  f"{1e6 * statistics.median(t) / a.count:.0f} us a write)")
        if snaps:
            walls = sorted(w for w, _ in snaps)
            busy = sorted(b for _, b in snaps)
            print(f"snapshots: {len(snaps)}, each {1e3 * statistics.median(walls):.1f} ms from "
                  f"first question to last reply (median; max {1e3 * walls[-1]:.1f}), of which "
                  f"{1e3 * statistics.median(busy):.1f} ms waiting for QEMU's replies (median; "
                  f"max {1e3 * busy[-1]:.1f}), every {a.interval:g} s")
            print(f"the recorder's own CPU: {sum(cpu):.2f} s for {sum(counts)} snapshots in "
                  f"{len(cpu)} runs (its start-up included: "
                  f"{statistics.median(cpu):.2f} s a run)")
        return 0
    finally:
        qemu.kill()
        qemu.wait()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def shell(ctl: socket.socket, command: str) -> str:
    """Run ``command`` on the guest's control shell; what it printed. The end mark is computed
    by the shell (``$((n+1))``), so the echo of the typed line (which busybox's line editor wraps
    at the terminal's width) never holds it."""
    n = time.monotonic_ns()
    ctl.sendall(f"{command}\necho __done$(({n}+1))__\n".encode())
    mark = f"__done{n + 1}__"
    buf = ""
    while mark not in buf:
        chunk = ctl.recv(65536)
        if not chunk:
            raise RuntimeError("the guest's shell closed")
        buf += chunk.decode(errors="replace")
    return buf[:buf.index(mark)]


def snapshot_durations(log: Path) -> list[tuple[float, float]]:
    """Per snapshot: seconds from its first question (query-status) to its last reply, and the
    sum of its questions' round trips (QEMU answering, plus the socket: the most the snapshot can
    have held QEMU's main loop)."""
    out: list[tuple[float, float]] = []
    start = last = None
    busy, sent = 0.0, {}
    for line in log.read_text().splitlines():
        r = json.loads(line)
        m = r["msg"]
        if r["dir"] == "->" and m.get("execute") == "query-status":
            if start is not None and last is not None:
                out.append((last - start, busy))
            start, last, busy = r["t"], None, 0.0
        if r["dir"] == "->":
            sent[m.get("id")] = r["t"]
        elif "id" in m and m["id"] in sent and start is not None:
            last = r["t"]
            busy += r["t"] - sent.pop(m["id"])
    if start is not None and last is not None:
        out.append((last - start, busy))
    return out


if __name__ == "__main__":
    sys.exit(main())

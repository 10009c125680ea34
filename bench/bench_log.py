#!/usr/bin/env python3
"""Bench: a 100 MB synthetic libvirt debug log through ``read_qmp_log``, against a baseline.

Baseline (same run, same file): iterate the file's lines and ``json.loads`` every QMP payload on
them (what any reader must at least do). Each phase runs in a fresh interpreter so its peak RSS is
its own. Prints MB/s, peak RSS, and the ratios parse/baseline.

Two logs: every queue-status reply different (the worst case: all of it is retained), and idle
queues (replies repeat; retained memory stays flat however long the log).

usage: bench/bench_log.py [--size-mb 100] [--vms 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def phase_baseline(path: str) -> dict:
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for raw in f:
            text = raw.decode("utf-8", "replace")
            for marker in (" msg=", " reply=", " event=", "Line ["):
                i = text.find(marker)
                if i >= 0:
                    payload = text[i + len(marker):].rstrip("\r\n]")
                    try:
                        json.loads(payload)
                        n += 1
                    except ValueError:
                        pass
                    break
    return {"seconds": time.perf_counter() - t0, "messages": n}


def phase_parse(path: str) -> dict:
    from vdecode.sources.qmp_log import read_qmp_log

    t0 = time.perf_counter()
    log = read_qmp_log(path)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "exchanges": len(log.exchanges),
            "events": sum(len(m.events) for m in log.monitors),
            "monitors": len(log.monitors), "warnings": len(log.warnings)}


def phase_latest(path: str) -> dict:
    """What ``vdecode qmp``/``view``/``bundle`` read: the newest answer per question."""
    from vdecode.sources.qmp_log import read_qmp_log

    t0 = time.perf_counter()
    log = read_qmp_log(path, latest_only=True)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "exchanges": len(log.exchanges),
            "events": sum(len(m.events) for m in log.monitors)}


def run_phase(name: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, path],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument("--vms", type=int, default=3)
    ap.add_argument("--phase", default=None)
    ap.add_argument("path", nargs="?")
    a = ap.parse_args()
    if a.phase:
        res = {"baseline": phase_baseline, "parse": phase_parse,
               "latest": phase_latest}[a.phase](a.path)
        res["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return

    from tests.builders.qmp_logs import write_synthetic_libvirt

    for label, every in (("every reply distinct", 1), ("idle queues, replies repeat", 10**9)):
        tmp = tempfile.NamedTemporaryFile(suffix=".log", delete=False)
        tmp.close()
        path = tmp.name
        try:
            made = write_synthetic_libvirt(Path(path), int(a.size_mb * 1e6), vms=a.vms,
                                           advance_every=every)
            mb = made["bytes"] / 1e6
            print(f"== synthetic libvirt log, {label}: {mb:.1f} MB, {made['exchanges']} "
                  f"exchanges, {made['events']} events, {a.vms} VMs")
            base = run_phase("baseline", path)
            parse = run_phase("parse", path)
            if parse["exchanges"] != made["exchanges"] or parse["warnings"]:
                raise SystemExit(f"read_qmp_log lost records: {parse}")
            print(f"baseline (lines + json.loads of {base['messages']} payloads): "
                  f"{base['seconds']:.2f} s, {mb / base['seconds']:.1f} MB/s, "
                  f"peak RSS {base['max_rss_mb']:.0f} MB")
            print(f"read_qmp_log ({parse['exchanges']} exchanges, {parse['events']} events, "
                  f"{parse['monitors']} monitors): {parse['seconds']:.2f} s, "
                  f"{mb / parse['seconds']:.1f} MB/s, peak RSS {parse['max_rss_mb']:.0f} MB")
            latest = run_phase("latest", path)
            print(f"read_qmp_log latest_only ({latest['exchanges']} exchanges kept): "
                  f"{latest['seconds']:.2f} s, {mb / latest['seconds']:.1f} MB/s, "
                  f"peak RSS {latest['max_rss_mb']:.0f} MB "
                  f"({latest['max_rss_mb'] / base['max_rss_mb']:.2f}x the baseline's)")
            print(f"ratio time parse/baseline: {parse['seconds'] / base['seconds']:.2f}x; "
                  f"peak RSS parse/baseline: {parse['max_rss_mb'] / base['max_rss_mb']:.2f}x; "
                  f"peak RSS / file size: {parse['max_rss_mb'] / mb:.2f}")
        finally:
            os.unlink(path)


if __name__ == "__main__":
    main()

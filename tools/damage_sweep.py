#!/usr/bin/env python3
"""Damage real inputs and run every command on them: no traceback, no hang, a documented status,
inputs untouched, and an answer from a cut dump that says what is missing.

usage: damage_sweep.py [--captures DIR] [--cuts N] [--flips N] [--vdecode EXE] [--out DIR] [-v]

For each real capture (``../shared/captures`` by default) and each of its dumps (ELF, kdump, QEMU
core) and the shipped samples, it makes damaged copies in a scratch folder: cut short at ``--cuts``
offsets spread over the file (plus inside the first header), and ``--flips`` copies with a run of
random bytes written at a random offset (seeded: the same run each time). Then it runs the view
(text and ``--json``), ``qmp`` with a fixed question set, ``info`` and ``bundle`` on each, and
``log`` and the view on cut logs. A result is bad when:

- stderr holds ``Traceback`` or the status is not one of :data:`STATUSES`;
- the command ran past ``TIMEOUT`` seconds;
- the damaged input changed while vdecode read it (inputs are opened read-only);
- an error was more than one line;
- a cut dump's answer exits 0 but neither stdout nor stderr says the input is incomplete.

It prints one line per bad result and a summary line; the exit status is 1 if any was bad. This is
the sweep the issue asks to stay clean; it is a tool, not a test, because it takes minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
STATUSES = {0, 1, 2, 3, 4, 5}
TIMEOUT = 120
MISSING_WORDS = ("incomplete", "absent", "missing", "cut short", "truncated")
QMP_QUESTIONS = "\n".join([
    '{"execute": "qmp_capabilities"}',
    '{"execute": "x-query-virtio", "id": 1}',
    '{"execute": "x-query-virtio-status", "arguments": {"path": "/machine/peripheral-anon/device[0]/virtio-backend"}, "id": 2}',
    '{"execute": "x-query-virtio-queue-status", "arguments": {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "queue": 0}, "id": 3}',
    '{"execute": "x-query-virtio-queue-element", "arguments": {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "queue": 0}, "id": 4}',
]) + "\n"


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def decompressed(src: Path, scratch: Path) -> Path:
    if not src.name.endswith(".zst"):
        return src
    out = scratch / "whole" / src.parent.name / src.name[:-4]
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as i, open(out, "wb") as o:
            zstandard.ZstdDecompressor().copy_stream(i, o)
    return out


def cut_offsets(size: int, n: int) -> list[int]:
    inner = [size * k // (n + 1) for k in range(1, n + 1)]
    return sorted({64, 4096 + 17, *inner, size - 4096, size - 1} - {0})


def damaged_copies(whole: Path, scratch: Path, cuts: int, flips: int, rng: random.Random
                   ) -> list[tuple[str, Path]]:
    size = whole.stat().st_size
    out = []
    for off in cut_offsets(size, cuts):
        p = scratch / f"{whole.parent.name}-{whole.name}.cut{off}"
        with open(whole, "rb") as i, open(p, "wb") as o:
            left = off
            while left:
                chunk = i.read(min(left, 1 << 22))
                o.write(chunk)
                left -= len(chunk)
        out.append((f"cut at {off:#x} of {size:#x}", p))
    for k in range(flips):
        p = scratch / f"{whole.parent.name}-{whole.name}.flip{k}"
        shutil.copyfile(whole, p)
        off = rng.randrange(0, min(size, 1 << 16)) if k % 2 == 0 else rng.randrange(0, size)
        with open(p, "r+b") as f:
            f.seek(off)
            f.write(rng.randbytes(min(64, size - off)))
        out.append((f"64 random bytes at {off:#x}", p))
    return out


def run(exe: list[str], args: list[str], stdin: str | None, cwd: Path) -> tuple[int | None, str, str]:
    try:
        r = subprocess.run([*exe, *args], input=(stdin or "").encode(), capture_output=True,
                           timeout=TIMEOUT, cwd=cwd, env={**os.environ, "COLUMNS": "100"})
    except subprocess.TimeoutExpired:
        return None, "", ""
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def check(what: str, args: list[str], exe: list[str], inputs: list[Path], cwd: Path,
          stdin: str | None = None, cut: bool = False) -> list[str]:
    before = [digest(p) for p in inputs]
    status, out, err = run(exe, args, stdin, cwd)
    bad = []
    if status is None:
        bad.append(f"hang (> {TIMEOUT} s)")
    else:
        if "Traceback" in err:
            bad.append("traceback: " + err.strip().splitlines()[-1][:200])
        if status not in STATUSES:
            bad.append(f"exit status {status}")
        stray = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("vdecode: ")]
        if status and stray and not bad:
            bad.append("error text is not one line: " + err.strip()[:200].replace("\n", " | "))
        if status == 0 and cut and not any(w in (out + err).lower() for w in MISSING_WORDS):
            bad.append("answered from a cut input without saying what is missing")
    if [digest(p) for p in inputs] != before:
        bad.append("an input changed")
    return [f"{what}: vdecode {' '.join(args)}: {b}" for b in bad]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captures", type=Path, default=ROOT.parent / "shared" / "captures")
    ap.add_argument("--cuts", type=int, default=5)
    ap.add_argument("--flips", type=int, default=2)
    ap.add_argument("--vdecode", default=None, help="the vdecode to run (default: this checkout's venv)")
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--seed", type=int, default=24)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    exe = [a.vdecode] if a.vdecode else [str(ROOT / ".venv" / "bin" / "vdecode")]
    rng = random.Random(a.seed)
    scratch = a.out or Path(tempfile.mkdtemp(prefix="vdecode-sweep-"))
    scratch.mkdir(parents=True, exist_ok=True)
    cache = scratch / "cache"
    os.environ["VDECODE_CACHE"] = str(cache)
    bad: list[str] = []
    runs = 0
    try:
        sources: list[tuple[Path, Path | None]] = []      # (dump, log)
        for case in sorted(p for p in a.captures.iterdir() if (p / "case.json").exists()) \
                if a.captures.is_dir() else []:
            manifest = json.loads((case / "case.json").read_text())
            log = case / manifest["logs"]["early"]
            for name in manifest["dumps"].values():
                sources.append((decompressed(case / name, scratch), log))
        for vdb in sorted((ROOT / "samples").glob("*.vdb")):
            sources.append((vdb, None))
        for whole, log in sources:
            for what, damaged in damaged_copies(whole, scratch, a.cuts, a.flips, rng):
                what = f"{whole.parent.name}/{whole.name} {what}"
                cut = "cut at" in what
                logs = ["--log", str(log)] if log else []
                jobs = [
                    ([str(damaged), *logs], None),
                    ([str(damaged), *logs, "--json", "--queue", "0"], None),
                    (["qmp", str(damaged), *logs], QMP_QUESTIONS),
                    (["info", str(damaged)], None),
                    (["bundle", str(damaged), *logs, "-o", str(scratch / "out.vdb")], None),
                ]
                for args, stdin in jobs:
                    runs += 1
                    found = check(what, args, exe, [damaged], scratch, stdin, cut)
                    if a.verbose:
                        print(f"{'BAD ' if found else 'ok  '}{what}: {' '.join(args[:1])}", flush=True)
                    bad.extend(found)
                damaged.unlink()
        for whole, log in sources[:1]:
            if log is None:
                continue
            data = log.read_bytes()
            for k in (1, 3):
                p = scratch / f"cut{k}.jsonl"
                p.write_bytes(data[:len(data) * k // 4 + 7])
                for args in (["log", str(p)], [str(whole), "--log", str(p)]):
                    runs += 1
                    bad.extend(check(f"log cut at {k}/4", args, exe, [p], scratch))
    finally:
        if a.out is None:
            shutil.rmtree(scratch, ignore_errors=True)
    for line in bad:
        print(line)
    print(f"damage sweep: {runs} runs, {len(bad)} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Score vdecode's offline QMP replies against what a real QEMU answered.

usage: fidelity_local.py [-v] [--captures DIR] [--case NAME] [--mode DUMP+LOG] [--vdecode CMD]

A copy of ../shared/tools/fidelity.py with --captures DIR (default: the shared captures), for
scratch captures recorded with tools/capture/ (dumps there may be stored uncompressed).

For every capture under shared/captures (a real QEMU 7.2 run: see captures/README.md) and every
(dump, log) pair it offers, starts `vdecode qmp DUMP [--log LOG]` (CMD defaults to `vdecode`),
speaks QMP to it on stdin (qmp_capabilities, then every request QEMU was asked while the VM was
stopped, in the same order) and compares each reply with QEMU's:
  fields  leaves of the reply equal to QEMU's (lists compared whole, in order)
  exact   replies identical to QEMU's, key order included
Modes: DUMP is elf, kdump-zlib or qemu-core; LOG is instant (transcript up to the dump),
early (a log taken before the final workload) or none.
Exit 0 only when every field of every mode matched.
"""
import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"
ALL_FIELDS = False
CACHE = Path(tempfile.gettempdir()) / "vdecode-captures"


def unpack(case: Path, name: str) -> Path:
    """Dumps are stored zstd-compressed; decompress once into a cache."""
    if not name.endswith(".zst"):
        return case / name
    out = CACHE / case.name / name[:-4]
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        subprocess.run(["zstd", "-q", "-d", "-f", str(case / name), "-o", str(tmp)], check=True)
        tmp.rename(out)
    return out


def leaves(x, prefix=""):
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else k))
        return out or {prefix: "{}"}
    return {prefix: json.dumps(x)}


def converse(cmd, dump, log, exchanges, env=None):
    reqs = [{"execute": "qmp_capabilities", "id": "caps"}]
    reqs += [dict(req, id=i) for i, (req, _) in enumerate(exchanges)]
    argv = cmd + ["qmp", str(dump)] + (["--log", str(log)] if log else [])
    try:
        r = subprocess.run(argv, input="".join(json.dumps(x) + "\n" for x in reqs),
                           capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired:
        return {}, "timed out after 600 s"
    except OSError as e:
        return {}, str(e)
    replies = {}
    for line in r.stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "id" in obj:
            replies[obj.pop("id")] = obj
    return replies, r.stderr.strip()[-300:]


def score_mode(cmd, case, manifest, dump_kind, log_kind, verbose):
    truth = json.loads((case / manifest["truth"]).read_text())["exchanges"]
    dump = unpack(case, manifest["dumps"][dump_kind])
    log = case / manifest["logs"][log_kind] if log_kind != "none" else None
    replies, err = converse(cmd, dump, log, truth)
    ok = total = exact = 0
    for i, (req, want) in enumerate(truth):
        got = replies.get(i, {"<no reply>": err})
        w, g = leaves(want), leaves(got)
        bad = sorted(k for k in set(w) | set(g) if w.get(k) != g.get(k))
        ok += sum(1 for k in w if w[k] == g.get(k))
        total += len(w)
        exact += json.dumps(want) == json.dumps(got)
        if bad and verbose:
            args = json.dumps(req.get("arguments", {}))
            print(f"    {req['execute']} {args}")
            for k in (bad if ALL_FIELDS else bad[:4]):
                print(f"      {k}: QEMU {w.get(k, '<absent>')[:120]}  vdecode {g.get(k, '<absent>')[:120]}")
    return ok, total, exact, len(truth)


def modes(manifest):
    for dump_kind in manifest["dumps"]:
        for log_kind in ("instant", "early", "none"):
            if log_kind in manifest["logs"] or log_kind == "none":
                if not (log_kind == "instant" and dump_kind != "elf"):
                    yield f"{dump_kind}+{log_kind}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="show the fields that differ")
    ap.add_argument("--case", action="append", help="only this capture (repeatable)")
    ap.add_argument("--mode", action="append", help="only this DUMP+LOG mode (repeatable)")
    ap.add_argument("--vdecode", default="vdecode", help="command that runs vdecode")
    ap.add_argument("--captures", type=Path, default=CAPTURES, help="folder of capture folders")
    ap.add_argument("--all-fields", action="store_true", help="with -v: every differing field, not the first 4")
    a = ap.parse_args()
    global ALL_FIELDS
    ALL_FIELDS = a.all_fields
    cmd = shlex.split(a.vdecode)
    sums = defaultdict(lambda: [0, 0, 0, 0])
    for case in sorted(p for p in a.captures.iterdir() if (p / "case.json").exists()):
        if a.case and case.name not in a.case:
            continue
        manifest = json.loads((case / "case.json").read_text())
        for mode in modes(manifest):
            if a.mode and mode not in a.mode:
                continue
            d, lg = mode.split("+")
            r = score_mode(cmd, case, manifest, d, lg, a.verbose)
            for i, v in enumerate(r):
                sums[mode][i] += v
            print(f"{case.name:10s} {mode:18s} fields {r[0]}/{r[1]}  exact {r[2]}/{r[3]}", flush=True)
    for mode, (ok, tot, ex, n) in sorted(sums.items()):
        print(f"fidelity {mode:18s} fields {ok}/{tot} ({100.0 * ok / max(tot, 1):.1f}%)  exact replies {ex}/{n}")
    sys.exit(0 if sums and all(s[0] == s[1] for s in sums.values()) else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turn scratch captures (tools/capture/, kept outside the repo) into small regression fixtures.

usage: make_fixtures.py CAPTURES_DIR OUT_DIR [--vdecode CMD] [--max-bytes N] [--ratchet FILE] [NAME...]

For every capture folder NAME under CAPTURES_DIR (case.json, truth.json, early.jsonl, instant.jsonl
and uncompressed dumps, as ``VD_NOCOMPRESS=1 make_captures.sh`` leaves them) it writes
OUT_DIR/NAME/: the text files, and one ``vdecode bundle`` per mode (DUMP+LOG, see MODES), stored
zstd-compressed as ``DUMP+LOG.vdb.zst``. A bundle whose compressed size is over --max-bytes is left
out and named in case.json ``skipped`` with its size (a bundle of a run where vdecode had to carve
the rings keeps the whole RAM). case.json ``bundles`` maps each kept mode to its file.

With --ratchet FILE it scores each kept bundle (``vdecode qmp BUNDLE``, the log is inside it)
against truth.json and writes the scores as the ratchet's floors (``NAME/MODE``: fields, exact,
of_fields, of_replies), keeping entries of captures it did not touch.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fidelity_local import converse, leaves  # noqa: E402  (tools/ is not a package)

MODES = ["elf+instant", "elf+early", "kdump-zlib+early", "qemu-core+none", "qemu-core+early"]
TEXT = ["truth.json", "early.jsonl", "instant.jsonl"]


def score(cmd: list[str], bundle: Path, truth: list, env: dict) -> dict:
    """The shared scorer's measure (``tools/fidelity_local.py``) of ``vdecode qmp BUNDLE``."""
    replies, _ = converse(cmd, bundle, None, truth, env=env)
    ok = total = exact = 0
    for i, (_, want) in enumerate(truth):
        got = replies.get(i, {})
        w, g = leaves(want), leaves(got)
        ok += sum(1 for k in w if w[k] == g.get(k))
        total += len(w)
        exact += json.dumps(want) == json.dumps(got)
    return {"fields": ok, "exact": exact, "of_fields": total, "of_replies": len(truth)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captures", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--vdecode", default="vdecode")
    ap.add_argument("--max-bytes", type=int, default=1_000_000)
    ap.add_argument("--ratchet", type=Path)
    a = ap.parse_args()
    cmd = shlex.split(a.vdecode)
    names = a.names or sorted(p.name for p in a.captures.iterdir() if (p / "case.json").exists())
    ratchet = json.loads(a.ratchet.read_text()) if a.ratchet and a.ratchet.exists() else {}
    import os
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        env["VDECODE_CACHE"] = tmp
        for name in names:
            src, dst = a.captures / name, a.out / name
            manifest = json.loads((src / "case.json").read_text())
            if dst.exists():
                shutil.rmtree(dst)
            dst.mkdir(parents=True)
            for f in TEXT:
                shutil.copy(src / f, dst / f)
            bundles, skipped = {}, {}
            for mode in MODES:
                dump_kind, log_kind = mode.split("+")
                if dump_kind not in manifest["dumps"]:
                    continue
                raw = Path(tmp) / f"{name}-{mode}.vdb"
                argv = cmd + ["bundle", str(src / manifest["dumps"][dump_kind]), "-o", str(raw)]
                if log_kind != "none":
                    argv += ["--log", str(src / manifest["logs"][log_kind])]
                r = subprocess.run(argv, capture_output=True, text=True, env=env)
                if r.returncode != 0:
                    skipped[mode] = "vdecode bundle failed: " + r.stderr.strip()[-300:]
                    continue
                out = dst / f"{mode}.vdb.zst"
                subprocess.run(["zstd", "-q", "-19", "-f", str(raw), "-o", str(out)], check=True)
                raw.unlink()
                if out.stat().st_size > a.max_bytes:
                    skipped[mode] = f"bundle is {out.stat().st_size} bytes compressed (over {a.max_bytes})"
                    out.unlink()
                    continue
                bundles[mode] = out.name
                if a.ratchet:
                    ratchet[f"{name}/{mode}"] = score(cmd, out, json.loads((dst / "truth.json").read_text())["exchanges"], env)
                    print(name, mode, ratchet[f"{name}/{mode}"], flush=True)
            (dst / "case.json").write_text(json.dumps({
                "name": name, "description": manifest.get("description", ""), "qemu": manifest.get("qemu"),
                "scenario": f"tools/capture/scenarios/{name}.json", "truth": "truth.json",
                "logs": {"early": "early.jsonl", "instant": "instant.jsonl"},
                "bundles": bundles, "skipped": skipped,
                **({"core": manifest["core"]} if "core" in manifest else {})}, indent=1) + "\n")
            print(dst, sorted(bundles), "skipped:", sorted(skipped), flush=True)
    if a.ratchet:
        a.ratchet.write_text(json.dumps(dict(sorted(ratchet.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

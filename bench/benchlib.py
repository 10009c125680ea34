"""What the benchmarks share: where the real captures are and their dumps, decompressed once.

The benches run on a plain install (no test extras), so this does not import ``tests``: the same
lookup as the tests' fixtures (``$VDECODE_CAPTURES``, else ``../shared/captures`` beside the
checkout) and the same cache folder, so a test run and a bench run decompress each dump once.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
CAPTURES = Path(os.environ.get("VDECODE_CAPTURES", REPO.parent / "shared" / "captures"))
CACHE = Path(tempfile.gettempdir()) / "vdecode-captures"


def capture_names() -> list[str]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p.name for p in CAPTURES.iterdir() if (p / "case.json").exists())


def require_captures() -> list[str]:
    """The capture names, or exit saying how to get them (a bench without data measures nothing)."""
    names = capture_names()
    if not names:
        sys.exit(f"no captures in {CAPTURES}: put the shared folder beside the checkout or set "
                 "VDECODE_CAPTURES=DIR")
    return names


def manifest(name: str) -> dict:
    return json.loads((CAPTURES / name / "case.json").read_text())


def dump(name: str, kind: str) -> Path:
    """One capture's dump of ``kind`` (elf, kdump-zlib, qemu-core), decompressed into CACHE once."""
    stored = manifest(name)["dumps"][kind]
    if not stored.endswith(".zst"):
        return CAPTURES / name / stored
    out = CACHE / name / stored[:-4]
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
        with open(CAPTURES / name / stored, "rb") as src, open(tmp, "wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
        tmp.rename(out)
    return out


def log(name: str, kind: str) -> Path:
    return CAPTURES / name / manifest(name)["logs"][kind]

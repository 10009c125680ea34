"""The benchmarks still run: each loads against today's package, and the two that need no
capture run once (their timings are not looked at; only that they finish and print a ratio)."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_every_bench_loads(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    runpy.run_path(str(BENCH / script), run_name="bench_loaded_by_a_test")


@pytest.mark.parametrize("script", ["bench_view.py", "bench_chains.py"])
def test_synthetic_benches_run(script):
    out = subprocess.run([sys.executable, str(BENCH / script), "--repeat", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio" in out.stdout

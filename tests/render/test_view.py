"""``vdecode DUMP``: golden text and JSON on the real captures, the 80-column limit (rich at width
80, and a real 80x50 terminal under tmux), ``--device`` selection errors.

Regenerate the goldens with ``VDECODE_REGEN=1 pytest tests/render/test_view.py`` (deterministic:
no paths beyond file names, no timestamps other than the log's own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vdecode.cli import cli

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
REGEN = bool(os.environ.get("VDECODE_REGEN"))

# (golden name, capture, dump kind, log kind or None, extra args)
CASES = [
    ("basic-core", "basic", "qemu-core", None, []),
    ("basic-elf-early", "basic", "elf", "early", []),
    ("basic-core-blk-q0", "basic", "qemu-core", None, ["--device", "virtio-blk", "--queue", "0"]),
    ("basic-elf-serial-q4", "basic", "elf", "early", ["--device", "virtio-serial", "--queue", "4"]),
    ("mixed-core", "mixed", "qemu-core", "early", []),
    ("mixed-core-packedblk-q0", "mixed", "qemu-core", None, ["--device", "packedblk", "--queue", "0"]),
]


def run(captures, cap: str, kind: str, log: str | None, extra: list[str], *json_: str):
    c = captures[cap]
    args = ["view", str(c.dump(kind)), *extra, *json_]
    if log:
        args += ["--log", str(c.log(log))]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN or not path.exists():
        path.write_text(text)
    assert text == path.read_text()


@pytest.mark.parametrize("name, cap, kind, log, extra", CASES, ids=[c[0] for c in CASES])
def test_text_golden(captures, name, cap, kind, log, extra):
    out = run(captures, cap, kind, log, extra)
    assert max(len(line) for line in out.splitlines()) <= 80
    check_golden(f"view-{name}.txt", out)


@pytest.mark.parametrize("name, cap, kind, log, extra",
                         [c for c in CASES if c[0] in ("basic-core", "basic-core-blk-q0",
                                                       "basic-elf-early")],
                         ids=["basic-core", "basic-core-blk-q0", "basic-elf-early"])
def test_json_golden(captures, name, cap, kind, log, extra):
    out = run(captures, cap, kind, log, extra, "--json")
    view = json.loads(out)
    assert view["schema_version"] == 1
    assert list(view) [:6] == ["schema_version", "input", "legend", "devices", "queue_detail", "findings"]
    check_golden(f"view-{name}.json", out)


def test_without_log_or_core_rings_are_carved(captures):
    out = run(captures, "basic", "elf", None, [])
    assert out.startswith("dump.elf (elf)\nQEMU state from nothing\n\nNo QMP log and no QEMU core: "
                          "QEMU's devices are unknown. Rings carved from guest\nRAM")
    assert max(len(line) for line in out.splitlines()) <= 80
    view = json.loads(run(captures, "basic", "elf", None, [], "--json"))
    assert view["carved"] and view["devices"] == [] and view["input"]["qemu_state"] == "none"


def test_every_value_says_how_it_was_known(captures):
    view = json.loads(run(captures, "basic", "elf", "early", [], "--json"))
    for dev in view["devices"]:
        for q in dev["queues"]:
            assert set(q["provenance"].values()) <= {"core", "dump", "log", "inferred", "carved"}
            assert q["provenance"]["last_avail_idx"] == "inferred"
            assert q["provenance"]["avail_idx"] == "dump"
    text = run(captures, "basic", "elf", "early", [])
    assert "~ inferred from the log and the rings" in text


def test_rich_at_80_columns_never_exceeds_the_width(captures):
    from vdecode.reconstruct.findings import Finding
    from vdecode.render.text import render_view_text
    view = json.loads(run(captures, "basic", "qemu-core", None, ["--all"], "--json"))
    view["findings"].append(vars(Finding("error", "loop", view["devices"][0]["path"], 0,
                                         "chain from head 3 loops back at descriptor 7 " * 3,
                                         {"heads": list(range(40))}, "virtio 1.2 2.7.5.2",
                                         'virtio_error("Looped descriptor")')))
    for color in (False, True):
        out = render_view_text(view, width=80, color=color)
        plain = out if not color else __import__("re").sub(r"\x1b\[[0-9;]*m", "", out)
        assert max(len(line) for line in plain.splitlines()) <= 80
        assert ("\x1b[" in out) == color


@pytest.mark.parametrize("which, message", [
    ("virtio-nothing", "vdecode: error: --device: no device matches 'virtio-nothing'; devices: "),
    ("virtio-blk", None),
])
def test_device_selection(captures, which, message):
    c = captures["mixed"]
    res = CliRunner().invoke(cli, ["view", str(c.dump("qemu-core")), "--device", which])
    if message is None:      # mixed has three virtio-blk devices: ambiguous, candidates listed
        assert res.exit_code != 0
        assert "'virtio-blk' is ambiguous: /machine/peripheral/" in str(res.exception)
    else:
        assert message.removeprefix("vdecode: error: ") in str(res.exception)


def _tmux() -> str | None:
    return shutil.which("tmux")


@pytest.mark.skipif(_tmux() is None, reason="tmux is not installed")
def test_under_tmux_80x50_nothing_wraps(captures, tmp_path):
    dump = str(captures["basic"].dump("qemu-core"))
    sock = str(tmp_path / "tmux.sock")
    done = tmp_path / "done"
    cmd = f"{sys.executable} -m vdecode {dump} --device virtio-net --queue 0; touch {done}; sleep 30"
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "80", "-y", "50", cmd], check=True,
                   env={**os.environ, "TERM": "xterm-256color"})
    try:
        for _ in range(300):
            if done.exists():
                break
            time.sleep(0.1)
        assert done.exists()
        raw = subprocess.run(["tmux", "-S", sock, "capture-pane", "-p", "-S", "-", "-E", "-"],
                             capture_output=True, text=True, check=True).stdout
        joined = subprocess.run(["tmux", "-S", sock, "capture-pane", "-p", "-J", "-S", "-", "-E", "-"],
                                capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], check=False)
    lines = raw.rstrip("\n").splitlines()
    assert "queue 0 of virtio-net  size 256" in raw
    assert max(len(line) for line in lines) <= 80
    strip = lambda text: [line.rstrip() for line in text.rstrip("\n").splitlines()]  # noqa: E731
    assert strip(raw) == strip(joined)       # no line was wrapped by the terminal (-J joins them)
    assert len(strip(raw)) > 50              # the whole view, scrolled history included


def test_broken_ring_renders_chains_problems_and_previews():
    """A synthetic queue with a pending blk read and a looping chain: text and JSON."""
    from tests.reconstruct.test_findings import HDR, NEXT, PROFILE, blk_chain, machine
    from vdecode.reconstruct.findings import find_findings
    from vdecode.reconstruct.view_model import build_view
    from vdecode.render.text import render_view_text
    from vdecode.render.view_json import render_view_json

    descs = blk_chain(0) + [(HDR, 16, NEXT, 4), (HDR, 16, NEXT, 3)]
    m = machine(descs, [0, 3])
    found, walks = find_findings(m, PROFILE)
    view = build_view(m, PROFILE, found, walks, dump_path="/x/synthetic.elf", dump_format="elf",
                      log_path=None, device="virtio-blk", queue=0)
    assert json.loads(render_view_json(view))["queue_detail"][0]["chains"][0]["preview"] == {
        "kind": "blk", "summary": "IN sector 2048",
        "fields": {"type": 0, "type_name": "IN", "ioprio": 0, "sector": 2048, "data_bytes": 512}}
    text = render_view_text(view, width=80)
    assert "  pending head 0  avail idx 0 slot 0  3 desc, out 16 in 513 bytes\n" in text
    assert "    blk: IN sector 2048\n" in text
    assert "  pending head 3  avail idx 1 slot 1  2 desc, out 32 in 0 bytes  loop\n" in text
    assert "  ERROR   virtio-blk q0: chain from head 3 loops back at descriptor 4\n" in text
    assert '      QEMU: virtio_error("Looped descriptor"): device broken until reset\n' in text
    assert max(len(line) for line in text.splitlines()) <= 80

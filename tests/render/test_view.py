"""``vdecode DUMP``: golden text (compact, and ``-v``) and JSON on the real captures, the
80-column limit (rich at width 80, and a real 80x50 terminal under tmux), ``--device`` selection
errors, the compact view's folding (every pending chain accounted for).

The ``-v`` goldens (``view-*-v.txt``) are the full view as it was before the compact one became
the default, byte for byte.

Regenerate the goldens with ``VDECODE_REGEN=1 pytest tests/render/test_view.py`` (deterministic:
no paths beyond file names, no timestamps other than the log's own).
"""

from __future__ import annotations

import json
import os
import re
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
    # s390x, its guest dump alone: virtio 1.x rings (little-endian) and a legacy ccw device's
    # big-endian ring carved, each with its driver (a core's view is not a golden: the QEMU
    # release it names comes from the executable when this machine has it)
    ("s390x-elf-carved", "s390x", "elf", None, []),
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
    if REGEN:
        path.write_text(text)
    # a missing golden fails: writing it here would make the test pass on whatever came out
    assert path.exists(), (f"golden {path.relative_to(GOLDEN.parents[2])} is missing: create it with "
                           "VDECODE_REGEN=1 .venv/bin/python -m pytest -q tests/render/test_view.py "
                           "and review it")
    assert text == path.read_text()


@pytest.mark.parametrize("name, cap, kind, log, extra", CASES, ids=[c[0] for c in CASES])
def test_text_golden(captures, name, cap, kind, log, extra):
    out = run(captures, cap, kind, log, extra)
    assert max(len(line) for line in out.splitlines()) <= 80
    check_golden(f"view-{name}.txt", out)


@pytest.mark.parametrize("name, cap, kind, log, extra", CASES, ids=[c[0] for c in CASES])
def test_verbose_text_golden(captures, name, cap, kind, log, extra):
    out = run(captures, cap, kind, log, [*extra, "-v"])
    assert max(len(line) for line in out.splitlines()) <= 80
    check_golden(f"view-{name}-v.txt", out)


FOLDED = re.compile(r"^    (?:in-flight )?(?:heads? |ids? |avail idx )[^:]*: (?:(\d+) × )?")
MORE = re.compile(r"^    … (\d+) more chain\(s\)")


def chains_in_lines(text: str) -> int:
    """How many chains the compact view's chain lines account for."""
    total = 0
    for line in text.splitlines():
        m = FOLDED.match(line) or MORE.match(line)
        if m:
            total += int(m.group(1) or 1)
    return total


@pytest.mark.parametrize("args", [["--queue", "0"], ["--queue", "0", "--all"],
                                  ["--device", "virtio-serial", "--queue", "4"]])
def test_compact_queue_view_fits_a_screen_and_accounts_for_every_chain(captures, args):
    """The issue's example: ``vdecode samples/basic-core.vdb --queue 0`` in <= 40 lines, each
    pending chain on a line of its own or in a folded run."""
    sample = str(Path(__file__).resolve().parents[2] / "samples" / "basic-core.vdb")
    res = CliRunner().invoke(cli, ["view", sample, *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = res.output
    assert len(text.splitlines()) <= 40
    assert max(len(line) for line in text.splitlines()) <= 80
    view = json.loads(CliRunner().invoke(cli, ["view", sample, *args, "--json"]).output)
    outstanding = sum(len(qd["chains"]) for qd in view["queue_detail"])
    assert outstanding == sum(q["pending"] + q["inflight"] for d in view["devices"]
                              for q in d["queues"])          # --json keeps every chain
    assert chains_in_lines(text) == outstanding
    if args == ["--queue", "0"]:
        assert "    heads 7–255: 249 × net receive buffer, 1536 bytes in (12 × 2048)\n" in text
        assert outstanding == 249 + 62


def test_compact_view_narrowed_to_one_device(captures):
    sample = str(Path(__file__).resolve().parents[2] / "samples" / "basic-core.vdb")
    text = CliRunner().invoke(cli, ["view", sample, "--device", "virtio-net"]).output
    assert [line.split()[0] for line in text.splitlines()[3:6]] == ["virtio-net", "q0", "q1"]
    assert "virtio-blk" not in text


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
    import dataclasses

    import vdecode
    from vdecode.reconstruct.postmortem.findings import Finding
    from vdecode.render.text import render_view_text
    with vdecode.open(str(captures["basic"].dump("qemu-core"))) as m:
        view = m.view(show_all=True)
    view = dataclasses.replace(view, findings=view.findings + (Finding(
        "error", "loop", view.devices[0].path, 0,
        "chain from head 3 loops back at descriptor 7 " * 3, {"heads": list(range(40))},
        "virtio 1.2 2.7.5.2", 'virtio_error("Looped descriptor")'),))
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
    cmd = f"{sys.executable} -m vdecode {dump} --device virtio-net --queue 0 -v; touch {done}; sleep 30"
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
    from vdecode.reconstruct.postmortem.findings import find_findings
    from vdecode.reconstruct.postmortem.view_model import build_view
    from vdecode.render.text import render_view_text

    descs = blk_chain(0) + [(HDR, 16, NEXT, 4), (HDR, 16, NEXT, 3)]
    m = machine(descs, [0, 3])
    found, walks = find_findings(m, PROFILE)
    view = build_view(m, PROFILE, found, walks, dump_path="/x/synthetic.elf", dump_format="elf",
                      log_path=None, device="virtio-blk", queue=0)
    assert json.loads(view.to_json())["queue_detail"][0]["chains"][0]["preview"] == {
        "kind": "blk", "summary": "IN sector 2048",
        "fields": {"type": 0, "type_name": "IN", "ioprio": 0, "sector": 2048, "data_bytes": 512}}
    text = render_view_text(view, width=80)
    assert "  pending head 0  avail idx 0 slot 0  3 desc, out 16 in 513 bytes\n" in text
    assert "    blk: IN sector 2048\n" in text
    assert "  pending head 3  avail idx 1 slot 1  2 desc, out 32 in 0 bytes  loop\n" in text
    assert "  ERROR   virtio-blk q0: chain from head 3 loops back at descriptor 4\n" in text
    assert '      QEMU: virtio_error("Looped descriptor"): device broken until reset\n' in text
    assert max(len(line) for line in text.splitlines()) <= 80
    compact = render_view_text(view, width=80, compact=True)
    assert "  q0 size 8  avail 2 used 0 last 0  pending 2 inflight 0  loop\n" in compact
    assert "    head 0: blk IN sector 2048, 3 desc, 16 bytes out, 513 bytes in\n" in compact
    assert "    head 3: 2 desc, 32 bytes out  loop\n" in compact
    assert "  ERROR   virtio-blk q0: chain from head 3 loops back at descriptor 4\n" in compact


def test_fold_chains_caps_lines_and_still_counts_every_chain():
    """A queue of 40 unlike chains: CHAIN_LINES lines, the last one summing up the rest."""
    from vdecode.reconstruct.postmortem import records as r
    from vdecode.render.text import CHAIN_LINES, render_view_text
    desc = r.Descriptor(0, 0x1000, 16, 0, ())
    chain = lambda i: r.Chain("pending", i, i, i, None, (desc,) * (1 + i % 2), 16, 0, (),  # noqa: E731
                              None)
    queue = r.Queue("/p", 0, 64, False, r.Rings(0x1000, 0x2000, 0x3000),
                    r.Indices(40, 0, None, 0, 0, None, 0, 0, 0, 0, None, None), 40, 0, "ok",
                    tuple(chain(i) for i in range(40)), (), None,
                    dict.fromkeys(("size", "avail_idx", "used_idx", "last_avail_idx", "inflight"),
                                  "core"), r.Notification(False, True, True, "kick,irq"), None,
                    False, True, False, None)
    view = r.View(r.ViewInput("x.elf", "elf", None, "core", None, None),
                  (r.Device("/p", "virtio-blk", 2, 15, ("DRIVER_OK",), (), 0, False, False,
                            (queue,), {"status": "core", "features": "core"}),),
                  (queue,), (), (), None, selection=r.Selection(None, 0, ("/p",)))
    text = render_view_text(view, compact=True)
    lines = [ln for ln in text.splitlines() if ln.startswith("    ")]
    assert len(lines) == CHAIN_LINES and chains_in_lines(text) == 40
    assert lines[-1] == "    … 29 more chain(s) at avail idx 11–39 in 29 line(s) (--all lists them)"
    assert len(render_view_text(view, compact=True, show_all=True).splitlines()) == len(
        text.splitlines()) - 1 + 29


def test_queue_and_device_read_only_the_selected_queue(captures):
    """``--device virtio-blk --queue 0`` reads no other queue's ring areas (cost follows the
    question): every guest read lies in that queue's rings or the buffers its entries name."""
    import dataclasses

    from vdecode.reconstruct.postmortem.evidence import RecordingSpace
    from vdecode.reconstruct.postmortem.findings import find_findings
    from vdecode.reconstruct.state.session import build_machine, profile_for
    from vdecode.reconstruct.postmortem.view_model import build_view, select_devices
    from vdecode.space.open import open_dump

    with open_dump(captures["basic"].dump("qemu-core")) as dump:
        recorder = RecordingSpace(dump.space)
        scratch = dataclasses.replace(dump, space=recorder)
        profile = profile_for(None, dump.qemu)
        machine, _ = build_machine(scratch, None, profile)
        paths = {d.canonical_path for d in select_devices(machine.state.devices, "virtio-net")}
        found, walks = find_findings(machine, profile, devices=paths, queue=1)
        build_view(machine, profile, found, walks, dump_path="qemu.core", dump_format="qemu-core",
                   log_path=None, device="virtio-net", queue=1)
        assert set(walks) == {(next(iter(paths)), 1)}
        others = [(q.desc, q.desc + 16 * q.vring_num) for d in machine.state.devices
                  for qi, q in d.queues.items() if q.desc and (d.canonical_path, qi) not in walks]
        touched = [(s, e) for s, e in recorder.reads for lo, hi in others if s < hi and e > lo]
        assert recorder.reads and not touched

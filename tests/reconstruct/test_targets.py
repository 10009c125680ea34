"""Other targets' real captures (``../shared/captures-targets``: an aarch64 ``virt`` guest with
virtio-pci and virtio-mmio, an s390x guest with virtio-ccw and a legacy big-endian ring), replayed
through ``vdecode qmp`` in every (dump, log) mode.

These cores are of ``qemu-system-aarch64`` and ``qemu-system-s390x`` (an x86_64 process whose
guest RAM is ``mach-virt.ram`` / ``s390.ram``): every mode with a log or a core must be exact, and
a guest dump alone may only answer what needs no QEMU state or refuse. ``targets_ratchet.json``
holds each mode's floor, as ``fidelity_ratchet.json`` does for the x86_64 captures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CAPTURES, Capture
from tests.reconstruct.fidelity import not_guessed, score

TARGETS = Path(os.environ.get("VDECODE_CAPTURES_TARGETS", CAPTURES.parent / "captures-targets"))
RATCHET = Path(__file__).with_name("targets_ratchet.json")
NO_TARGETS = (f"needs the shared real-QEMU captures of other targets, not found in {TARGETS}: put the "
              "shared folder beside the checkout (../shared/captures-targets) or set "
              "VDECODE_CAPTURES_TARGETS=DIR")


def _modes() -> list[tuple[str, str, str]]:
    out = []
    if TARGETS.is_dir():
        for case in sorted(p for p in TARGETS.iterdir() if (p / "case.json").exists()):
            manifest = json.loads((case / "case.json").read_text())
            for dump in manifest["dumps"]:
                for log in ("instant", "early", "none"):
                    if log == "instant" and dump != "elf":
                        continue
                    if log != "none" and log not in manifest["logs"]:
                        continue
                    out.append((case.name, dump, log))
    return out or [("", "", "")]


@pytest.mark.parametrize("name,dump,log", _modes())
def test_target_mode_does_not_drop_below_its_ratchet(name, dump, log):
    if not name:
        pytest.skip(NO_TARGETS)
    key = f"{name}/{dump}+{log}"
    floor = json.loads(RATCHET.read_text()).get(key)
    assert floor is not None, f"{key} has no floor in {RATCHET.name}: add its measured score"
    s = score(Capture(TARGETS / name), dump, log)
    assert (s["total"], s["replies"]) == (floor["of_fields"], floor["of_replies"]), (key, s)
    assert s["fields"] >= floor["fields"] and s["exact"] >= floor["exact"], (key, s, floor)
    if log != "none" or dump == "qemu-core":
        assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-800:]
    else:
        assert not not_guessed(s["unlike"]), not_guessed(s["unlike"])[:3]


@pytest.mark.parametrize("name", [m[0] for m in _modes() if m[1] == "qemu-core" and m[2] == "none"]
                         or [""])
def test_target_core_holds_its_guest_ram(name):
    """The RAMBlock list is entered from the target's own main-RAM block, so the core's guest RAM
    is found (it was reported absent: the list was entered only from x86's ``pc.*`` blocks)."""
    if not name:
        pytest.skip(NO_TARGETS)
    core = Capture(TARGETS / name).dump("qemu-core")
    r = subprocess.run([sys.executable, "-m", "vdecode", "info", "--json", str(core)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    blocks = [b["idstr"] for b in info["ram_blocks"]]
    assert {"arm64": "mach-virt.ram", "s390x": "s390.ram"}.get(name, blocks[0]) in blocks
    assert info["guest_ram"] == "present", info["guest_ram"]
    # its build is in no profile (the x86_64 7.2 layout fits it): info names no micro release
    # that the input does not say; where the core's executable is installed (qemu-system-arm or
    # -misc of that build, found by the core's NT_FILE path), its version string says 7.2.22
    if info.get("binary"):
        assert (info["qemu_version"], info["qemu_version_from"]) == ("7.2.22", "binary file")
        return
    assert info["qemu_version"] == "7.2.x", info["qemu_version"]
    assert info["build_id"] in info["qemu_version_from"], info["qemu_version_from"]

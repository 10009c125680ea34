"""Other targets' QEMU cores (``../shared/captures-targets``: ``qemu-system-aarch64`` with an
aarch64 ``virt`` guest, ``qemu-system-s390x`` with an s390x ``s390-ccw-virtio`` guest): an x86_64
process whose guest RAM is ``mach-virt.ram`` / ``s390.ram``.

Their fidelity in every (dump, log) mode is ``test_fidelity.py``'s, with floors in
``fidelity_ratchet.json`` like the x86_64 captures' (conftest reads both folders); this holds
what only these cores show.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import NO_CAPTURES, capture_arch, capture_folders
from tests.guest_machines import MAIN_RAM

TARGET_CORES = [n for n, p in capture_folders().items()
                if capture_arch(n) != "x86_64" and (p / "qemu.core.zst").exists()]


@pytest.mark.parametrize("name", TARGET_CORES or
                         [pytest.param(None, marks=pytest.mark.skip(reason=NO_CAPTURES))])
def test_target_core_holds_its_guest_ram(captures, name):
    """The RAMBlock list is entered from the target's own main-RAM block, so the core's guest RAM
    is found (it was reported absent: the list was entered only from x86's ``pc.*`` blocks)."""
    cap = captures[name]
    r = subprocess.run([sys.executable, "-m", "vdecode", "info", "--json",
                        str(cap.dump("qemu-core"))], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    blocks = [b["idstr"] for b in info["ram_blocks"]]
    assert MAIN_RAM[cap.arch] in blocks, blocks
    assert info["guest_ram"] == "present", info["guest_ram"]
    # info names no micro release that the input does not say: a build no profile lists (these
    # executables: the x86_64 layout of their release fits them) is "X.Y.x", with its build-id
    qemu = cap.manifest["qemu"]["qemu"]
    release = f"{qemu['major']}.{qemu['minor']}"
    assert info["qemu_version"] in (f"{release}.x", f"{release}.{qemu['micro']}"), info
    if info["qemu_version"].endswith(".x"):
        assert info["build_id"] in info["qemu_version_from"], info["qemu_version_from"]

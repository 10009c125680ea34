"""Other targets' guests, recorded for issue 25 and kept as small fixtures: each a guest panic
under load with a mixed device set, on Debian's QEMU 7.2 (TCG).

``tests/data/captures-targets/`` holds what ``tools/capture/make_fixtures.py`` made from the
recordings of ``../shared/capture/make_captures.sh`` (its ``"arch"`` scenarios; each case's
``scenario.json`` is the one recorded):

- ``a64panic``: aarch64 ``virt``: virtio-blk-pci with 2 queues, virtio-net-pci, virtio-scsi-pci,
  virtio-balloon-pci resized after the early log, and on virtio-mmio a virtio-rng-device and a
  virtio-blk-device (QOM paths without ``/virtio-backend``); the panic seen on the console.
- ``a64modern``: aarch64 ``virt`` with modern virtio-mmio (``force-legacy=false``): a 2-queue
  virtio-blk-device, virtio-net-device, virtio-keyboard-device, virtio-balloon-device inflated
  before the early log and deflated after it; on PCI a packed virtio-blk-pci, a legacy
  virtio-rng-pci and a virtio-serial-pci port.
- ``s390panic``: s390x ``s390-ccw-virtio``: virtio-blk-ccw with 2 queues, legacy
  (``max_revision=0``, big-endian rings) virtio-blk-ccw and virtio-net-ccw,
  virtio-net/scsi/rng/balloon-ccw, the balloon resized after the early log; QEMU's
  GUEST_PANICKED (the panic's disabled wait).
- ``s390mix``: s390x: a packed virtio-blk-ccw, legacy virtio-scsi/serial/rng/balloon-ccw (the
  balloon inflated before the early log, deflated after it), virtio-keyboard-ccw, virtio-net-ccw.

Every mode with a log or a core is exact and never falls below ``ratchet.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reconstruct.fidelity import fixture_cases, run_qmp, score_fixture

DATA = Path(__file__).resolve().parent.parent / "data" / "captures-targets"
ARCH = {"a64panic": "aarch64", "a64modern": "aarch64", "s390panic": "s390x", "s390mix": "s390x"}

pytestmark = pytest.mark.usefixtures("bundle_cache")


def _truth(name: str) -> list:
    return json.loads((DATA / name / "truth.json").read_text())["exchanges"]


def _has(status: dict, transport_bit: str) -> bool:
    return any(f.startswith(transport_bit) for f in status["guest-features"]["transports"])


def test_fixtures_are_small_and_of_their_target():
    sizes = [p.stat().st_size for p in DATA.rglob("*") if p.is_file()]
    assert max(sizes) < 1_000_000 and sum(sizes) < 5_000_000
    names = {p.name for p in DATA.iterdir() if (p / "case.json").exists()}
    assert names == set(ARCH)
    for name, arch in ARCH.items():
        case = json.loads((DATA / name / "case.json").read_text())
        scenario = json.loads((DATA / name / "scenario.json").read_text())
        assert case["arch"] == scenario["arch"] == arch
        assert case["qemu"]["qemu"]["major"] == 7
        assert sorted(case["bundles"]) == ["elf+early", "elf+instant", "kdump-zlib+early",
                                           "qemu-core+early", "qemu-core+none"]
    ratchet = json.loads((DATA / "ratchet.json").read_text())
    assert sorted(ratchet) == sorted(f"{n}/{m}" for n, m in fixture_cases(DATA))


def test_the_recordings_hold_the_devices_they_were_made_for():
    a64 = {d["path"]: d["name"] for d in _truth("a64panic")[0][1]["return"]}
    mmio = {p: n for p, n in a64.items() if not p.endswith("/virtio-backend")}
    assert mmio == {"/machine/peripheral/mmblk": "virtio-blk",
                    "/machine/peripheral/rng0": "virtio-rng"}
    assert sorted(a64.values()) == ["virtio-balloon", "virtio-blk", "virtio-blk", "virtio-net",
                                    "virtio-rng", "virtio-scsi"]
    def status(name):
        return {q["arguments"]["path"]: r["return"] for q, r in _truth(name)
                if q["execute"] == "x-query-virtio-status" and "return" in r}
    modern = status("a64modern")
    version_1 = {p: _has(st, "VIRTIO_F_VERSION_1") for p, st in modern.items()}
    assert version_1["/machine/peripheral/mmblk"]
    assert not version_1["/machine/peripheral/lrng/virtio-backend"]
    assert modern["/machine/peripheral/mmblk"]["num-vqs"] == 2
    assert _has(modern["/machine/peripheral/pkblk/virtio-backend"], "VIRTIO_F_RING_PACKED")
    assert status("s390panic")["/machine/peripheral/blk0/virtio-backend"]["num-vqs"] == 2
    mix = status("s390mix")
    assert _has(mix["/machine/peripheral/pkblk/virtio-backend"], "VIRTIO_F_RING_PACKED")
    for name, legacy in [("s390panic", "legacyblk"), ("s390panic", "legacynet"),
                         ("s390mix", "lscsi"), ("s390mix", "ser"), ("s390mix", "lrng"),
                         ("s390mix", "bal0")]:
        st = status(name)[f"/machine/peripheral/{legacy}/virtio-backend"]
        assert st["device-endian"] == "big"
        assert not _has(st, "VIRTIO_F_VERSION_1")


@pytest.mark.parametrize("name,mode", fixture_cases(DATA))
def test_bundle_is_exact_and_not_below_its_ratchet(name, mode):
    floor = json.loads((DATA / "ratchet.json").read_text())[f"{name}/{mode}"]
    s = score_fixture(DATA, name, mode)
    assert s["total"] == floor["of_fields"] and s["replies"] == floor["of_replies"]
    assert s["fields"] >= floor["fields"] and s["exact"] >= floor["exact"], (name, mode, s)
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-500:]


@pytest.mark.parametrize("mode", ["elf+early", "kdump-zlib+early"])
def test_a_legacy_ccw_balloon_keeps_its_isr_bits(mode):
    """s390mix's legacy balloon had isr 3 at the early log (inflated before it); no guest
    reads a ccw device's ISR, so it is still 3 after the deflate (taken as an INTx PCI
    balloon, the last interrupt's bit 0 was cleared: 2)."""
    path = "/machine/peripheral/bal0/virtio-backend"
    lines, _ = run_qmp([str(DATA / "s390mix" / f"{mode}.vdb.zst")], [
        {"execute": "qmp_capabilities"},
        {"execute": "x-query-virtio-status", "arguments": {"path": path}}])
    assert [json.loads(x) for x in lines if x.strip()][2]["return"]["isr"] == 3


@pytest.mark.parametrize("mode", ["elf+early", "kdump-zlib+early"])
def test_a_ccw_balloon_resized_since_the_log_shows_the_config_interrupt(mode):
    """The balloon's isr was 0 in the early log; the resize's virtio_notify_config set 0x3, and
    on virtio-ccw nothing reads the ISR (no register: indicators), so QEMU still shows 3. The
    same balloon on PCI has no MSI-X and its INTx handler clears it. The kdump's bundle keeps the
    guest's machine (QEMU's kdump header says ``S390X``) for that rule."""
    path = "/machine/peripheral/bal0/virtio-backend"
    early = [json.loads(x)["msg"]
             for x in (DATA / "s390panic" / "early.jsonl").read_text().splitlines()]
    logged = [m["return"]["isr"] for m in early
              if isinstance(m.get("return"), dict) and m["return"].get("name") == "virtio-balloon"
              and "isr" in m["return"]]
    assert logged and set(logged) == {0}
    bundle = DATA / "s390panic" / f"{mode}.vdb.zst"
    lines, _ = run_qmp([str(bundle)], [
        {"execute": "qmp_capabilities"},
        {"execute": "x-query-virtio-status", "arguments": {"path": path}}])
    reply = [json.loads(x) for x in lines if x.strip()][2]
    assert reply["return"]["isr"] == 3
    r = subprocess.run([sys.executable, "-m", "vdecode", "info", "--json", str(bundle)],
                       capture_output=True, text=True, timeout=300)
    assert json.loads(r.stdout)["machine"] == "s390", r.stderr


def test_a_receive_ring_refilled_after_the_last_packet_keeps_the_logged_shadow():
    """a64modern's virtio-net-device receive queue (1024 buffers): the guest refilled 33 buffers
    after QEMU's last receive (avail idx 1057, used 33: the ring is full), so QEMU still holds the
    1024 it read then; an element query reads avail->idx again (1057)."""
    path = "/machine/peripheral/mmnet"
    lines, _ = run_qmp([str(DATA / "a64modern" / "elf+early.vdb.zst")], [
        {"execute": "qmp_capabilities"},
        {"execute": "x-query-virtio-queue-status", "arguments": {"path": path, "queue": 0}},
        {"execute": "x-query-virtio-queue-element", "arguments": {"path": path, "queue": 0}},
        {"execute": "x-query-virtio-queue-status", "arguments": {"path": path, "queue": 0}}])
    before, element, after = (json.loads(x)["return"] for x in lines[2:] if x.strip())
    assert (before["used-idx"], before["shadow-avail-idx"], before["vring-num"]) == (33, 1024, 1024)
    assert element["avail"]["idx"] == after["shadow-avail-idx"] == 1057

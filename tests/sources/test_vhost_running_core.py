"""QEMU process cores of a running VM with a started vhost-user device: 10.0.13 and 11.1.3.

The ``vhostrun`` recordings (``tools/capture/scenarios/vhostrun.json``; 11.1 adds
``skip_commands``: live 11.1 aborts on ``x-query-virtio-status``): a vhost-user-blk with two
queues served by qemu-storage-daemon beside a plain virtio-blk, the question set asked while the
VM runs, then gcore at that instant (vhost started: a stop or a guest dump would stop it), then
the same questions again, which answered the same. ``tests/data/kcore/vhostrun-10.0.13`` and
``vhostrun-11.1`` hold each core slimmed by ``make_slim_core.py`` (only the pages vdecode reads
are kept) and its ``truth.json``. Their bundles are fixtures in ``tests/data/captures-*/vhostrun``;
these tests read the cores themselves, so they check the core reader (which ``vhost_dev`` is the
device's, 11.1's ``vhost_dev`` without ``backend_features``/``protocol_features``), not only the
bundle reader. Read without the executable: names from the profiles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reconstruct.fidelity import score_args
from tests.sources.test_kernel_core import _unpack
from vdecode.space.open import open_dump

DATA = Path(__file__).resolve().parent.parent / "data" / "kcore"
CASES = {"vhostrun-10.0.13": "10.0.13", "vhostrun-11.1": "11.1.3"}
VUBLK = "/machine/peripheral/vublk/virtio-backend"
# what both releases negotiated with qemu-storage-daemon (10.0.13 printed it: MQ, LOG_SHMFD,
# REPLY_ACK, BACKEND_REQ, PAGEFAULT, CONFIG, BACKEND_SEND_FD, HOST_NOTIFIER, CONFIGURE_MEM_SLOTS)
PROTOCOLS = 0x8F2B


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory) -> tuple[str, Path, list]:
    core = _unpack(DATA / request.param / "qemu.core.zst",
                   tmp_path_factory.mktemp(request.param) / "qemu.core")
    truth = json.loads((DATA / request.param / "truth.json").read_text())["exchanges"]
    return request.param, core, truth


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VDECODE_CACHE", str(tmp_path_factory.getbasetemp() / "vdecode-cache"))


def test_every_reply_is_qemus(case, tmp_path):
    name, core, truth = case
    s = score_args(truth, [str(core), "--binary", str(tmp_path / "no-such-qemu")])
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), (name, s["stderr"][-500:])
    vhost = [w for q, w in truth if q["execute"] == "x-query-virtio-vhost-queue-status"
             and "return" in w]
    assert len(vhost) >= 2      # the running instant: vhost queue replies QEMU really gave


def test_the_vhost_dev_is_the_one_whose_queues_point_back(case, tmp_path):
    name, core, _ = case
    with open_dump(core, binary=str(tmp_path / "no-such-qemu")) as d:
        assert ".".join(map(str, d.qemu.qemu_version)) == CASES[name]
        dev = next(x for x in d.qemu.devices if x.canonical_path == VUBLK)
    h = dev.vhost_started and dev.vhost_dev
    assert h and (h.nvqs, h.vq_index, h.max_queues, h.log_enabled) == (2, 0, 2, False)
    assert sorted(h.vqs) == [0, 1] and all(v.desc_phys and v.num for v in h.vqs.values())
    # 11.1 keeps protocol_features in struct vhost_user (hdev->opaque), 10.0 in vhost_dev
    assert h.protocol_features == PROTOCOLS
    assert h.backend_features == (0 if name.endswith("11.1") else 1 << 30)

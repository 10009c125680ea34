"""A VM with no virtio device at all: QEMU's process core and its guest dump (the ``novirtio``
recording, QEMU 7.2.22 under TCG, gcore; slimmed as ``tests/data/kcore/README.md`` says).

QEMU answers ``x-query-virtio`` with ``[]`` and every path with "is not a VirtIODevice"
(``truth.json``). vdecode must say the same from the core, alone or with the dump, not fail for
want of a VirtQueue array: a realized VirtIODevice always has one, so none means no device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.reconstruct.fidelity import score_args
from tests.sources.test_kernel_core import _unpack
from vdecode.cli import cli

CASE = Path(__file__).resolve().parent.parent / "data" / "kcore" / "novirtio"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("novirtio")
    return {n: _unpack(CASE / f"{n}.zst", out / n) for n in ("qemu.core", "dump.elf")}


@pytest.fixture(scope="module")
def truth() -> list:
    return json.loads((CASE / "truth.json").read_text())["exchanges"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VDECODE_CACHE", str(tmp_path_factory.getbasetemp() / "vdecode-cache"))


@pytest.mark.parametrize("inputs", [["qemu.core"], ["qemu.core", "dump.elf"], ["dump.elf", "qemu.core"]])
def test_replies_are_qemus(files, truth, inputs):
    assert any(req["execute"] == "x-query-virtio" and rep == {"return": []} for req, rep in truth)
    s = score_args(truth, [str(files[n]) for n in inputs])
    assert (s["fields"], s["exact"]) == (s["total"], s["replies"]), s["stderr"][-600:]


def test_view_and_info_say_there_is_none(files):
    res = CliRunner().invoke(cli, ["view", str(files["qemu.core"])])
    assert res.exit_code == 0, res.output
    assert "No virtio devices known." in res.output
    res = CliRunner().invoke(cli, ["info", str(files["qemu.core"]), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["virtqueue_arrays"] == 0 and info["devices"] == 0, info

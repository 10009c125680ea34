"""A VM with no virtio device at all: QEMU's process core and its guest dump (the ``novirtio``
recording under TCG, gcore, with QEMU 7.2.22 and with 10.0.2; slimmed as
``tests/data/kcore/README.md`` says).

QEMU 7.2 answers ``x-query-virtio`` with ``[]`` and every path with "is not a VirtIODevice";
10.0 answers "No virtio devices found" and "is not a realized VirtIODevice" (``truth.json``). vdecode must say the same from the core, alone or with the dump, not fail for
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

KCORE = Path(__file__).resolve().parent.parent / "data" / "kcore"
RELEASES = {"7.2": KCORE / "novirtio", "10.0": KCORE / "novirtio-10.0"}
NO_DEVICES = {"7.2": {"return": []},
              "10.0": {"error": {"class": "GenericError", "desc": "No virtio devices found"}}}


@pytest.fixture(scope="module", params=sorted(RELEASES))
def release(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def files(tmp_path_factory, release) -> dict[str, Path]:
    out = tmp_path_factory.mktemp(f"novirtio-{release}")
    return {n: _unpack(RELEASES[release] / f"{n}.zst", out / n) for n in ("qemu.core", "dump.elf")}


@pytest.fixture(scope="module")
def truth(release) -> list:
    return json.loads((RELEASES[release] / "truth.json").read_text())["exchanges"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VDECODE_CACHE", str(tmp_path_factory.getbasetemp() / "vdecode-cache"))


@pytest.mark.parametrize("inputs", [["qemu.core"], ["qemu.core", "dump.elf"], ["dump.elf", "qemu.core"]])
def test_replies_are_qemus(files, truth, release, inputs):
    assert [rep for req, rep in truth if req["execute"] == "x-query-virtio"] == [NO_DEVICES[release]]
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

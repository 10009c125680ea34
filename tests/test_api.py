"""The public API as ``docs/api.md`` documents it, on every sample: open, list devices and queues,
walk a chain, and ask QMP, whose replies must equal ``vdecode qmp``'s for the same request.

Only names ``docs/api.md`` gives are used here (``vdecode.open``, the machine's ``devices``,
``device``, ``queue``, ``qmp``, ``findings``, the dataclasses' fields, ``vdecode.VdecodeError``).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import vdecode

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.vdb"))


def vdecode_qmp(sample: Path, *requests: dict) -> list[dict]:
    """The replies ``vdecode qmp SAMPLE`` writes for ``requests`` (after the greeting and the
    capabilities reply), parsed in the order their members were written."""
    lines = [json.dumps({"execute": "qmp_capabilities"}), *map(json.dumps, requests)]
    out = subprocess.run([sys.executable, "-m", "vdecode", "qmp", str(sample)],
                         input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    replies = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert "QMP" in replies[0] and replies[1] == {"return": {}}
    return replies[2:]


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_a_script_using_only_the_documented_api(sample):
    with vdecode.open(sample) as machine:
        assert machine.devices, "every sample has virtio devices"
        for dev in machine.devices:
            assert dev.path.startswith("/machine/") and dev.name.startswith("virtio-")
            assert [q.index for q in dev.queues] == sorted(q.index for q in dev.queues)
            for q in dev.queues:
                assert q.device == dev.path
                assert q.pending is None or q.pending >= 0
        # walk a chain: the first queue with a pending one
        q = next(q for d in machine.devices for q in d.queues if q.chains)
        chain = q.chains[0]
        assert chain.state in ("pending", "in-flight")
        assert chain.descriptors and all(d.len >= 0 and d.addr > 0 for d in chain.descriptors)
        assert chain.bytes_in == sum(d.len for d in chain.descriptors if d.write)
        assert chain.bytes_out == sum(d.len for d in chain.descriptors if not d.write)
        if chain.avail_idx is not None:
            assert chain.slot == chain.avail_idx % q.size
        # frozen: a script cannot change what the stages produced
        with pytest.raises(dataclasses.FrozenInstanceError):
            chain.head = 0
        # one queue alone gives the same chains as the whole machine
        assert machine.queue(q.device, q.index) == q

        # QMP: the monitor's replies, identical to `vdecode qmp` for the same requests
        paths = [d.path for d in machine.devices]
        requests = [{"execute": "x-query-virtio-status", "arguments": {"path": p}} for p in paths]
        requests.append({"execute": "x-query-virtio-status", "arguments": {"path": "/nowhere"}})
        requests.append({"execute": "x-query-virtio"})
        ours = [machine.qmp(r["execute"], **r.get("arguments", {})) for r in requests]
        theirs = vdecode_qmp(sample, *requests)
        assert [json.dumps(r) for r in ours] == [json.dumps(r) for r in theirs]   # order too
        assert "return" in ours[0] and "error" in ours[-2]


def test_device_names_and_errors():
    sample = ROOT / "samples" / "mixed-elf-early.vdb"
    with vdecode.open(sample) as machine:
        assert machine.device("packedblk").queues[0].packed
        with pytest.raises(vdecode.VdecodeError, match="'virtio-blk' is ambiguous"):
            machine.device("virtio-blk")
        with pytest.raises(vdecode.UnsupportedInput, match="no queue 9"):
            machine.device("net0").queue(9)
    with pytest.raises(vdecode.InputError):
        vdecode.open(ROOT / "README.md")



def test_a_core_and_a_guest_dump_make_one_machine(tmp_path):
    """``vdecode.open(CORE, GUEST_DUMP)``, in either order, answers as ``vdecode qmp CORE DUMP``
    (a real kernel-written core without guest RAM, and the guest's dump of that instant)."""
    case = ROOT / "tests" / "data" / "kcore" / "kabortnoram"
    core, dump = case / "qemu.core.zst", case / "dump.elf.zst"
    with vdecode.open(core, dump, cache_dir=tmp_path) as machine:
        dev = next(d for d in machine.devices if d.queues)
        request = {"execute": "x-query-virtio-queue-element",
                   "arguments": {"path": dev.path, "queue": 0}}
        mine = machine.qmp(request["execute"], **request["arguments"])
    with vdecode.open(dump, core, cache_dir=tmp_path) as machine:
        assert machine.qmp(request["execute"], **request["arguments"]) == mine
    lines = [json.dumps({"execute": "qmp_capabilities"}), json.dumps(request)]
    out = subprocess.run([sys.executable, "-m", "vdecode", "qmp", str(core), str(dump),
                          "--cache-dir", str(tmp_path)], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert json.loads(out.splitlines()[-1]) == mine
    assert "return" in mine, mine


# --- one machine: the CLI and the API give the same values --------------------------------------

def _cli_json(*args: str) -> str:
    """What ``vdecode DUMP ... --json`` prints, run as users run it."""
    res = subprocess.run([sys.executable, "-m", "vdecode", *args, "--json"], capture_output=True,
                         text=True, encoding="utf-8")
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("sample", ["basic-core.vdb", "mixed-elf-early.vdb"])
def test_view_to_json_is_the_cli_json_byte_for_byte(sample):
    path = str(ROOT / "samples" / sample)
    with vdecode.open(path) as m:
        assert m.view(queue=0).to_json() == _cli_json(path, "--queue", "0")
        assert m.view().to_json() == _cli_json(path)
        assert m.view("virtio-net", 0, show_all=True).to_json() == \
            _cli_json(path, "--device", "virtio-net", "--queue", "0", "--all")


def test_view_to_json_on_a_real_capture(captures):
    c = captures["basic"]
    core, log = str(c.dump("qemu-core")), str(c.log("early"))
    with vdecode.open(core, log=log) as m:
        assert m.view(queue=0).to_json() == _cli_json(core, "--log", log, "--queue", "0")
    elf = str(c.dump("elf"))
    with vdecode.open(elf, log=log) as m:
        assert m.view(queue=0).to_json() == _cli_json(elf, "--log", log, "--queue", "0")


def test_the_profile_is_chosen_once_per_run(monkeypatch):
    """One machine answers the view, the report, QMP and the records: the profile is decided
    once, when it is made."""
    from click.testing import CliRunner

    from vdecode.cli import cli
    from vdecode.reconstruct.state import session

    calls = []
    real = session.profile_for
    monkeypatch.setattr(session, "profile_for", lambda *a, **k: calls.append(a) or real(*a, **k))
    with vdecode.open(ROOT / "samples" / "basic-core.vdb", qemu="7.2") as m:
        m.view(queue=0)
        m.view()
        m.report()
        m.qmp("x-query-virtio")
        assert m.devices and m.findings
        assert m.evidence("idx-advanced")
    assert len(calls) == 1
    calls.clear()
    res = CliRunner().invoke(cli, ["view", str(ROOT / "samples" / "basic-core.vdb"), "--queue", "0"])
    assert res.exit_code == 0 and len(calls) == 1


def _count_release_decisions(monkeypatch) -> list:
    """Every time a QEMU release is decided from the inputs' evidence: a profile chosen for a
    version that has no folder of its own (``7.2.22`` -> ``7.2``, :func:`profiles.nearest_version`),
    or the newest assumed (``load_profile()``). Loading a shipped folder by name is not one."""
    from vdecode import profiles
    from vdecode.reconstruct.state import session

    calls = []
    nearest, load = profiles.nearest_version, profiles.load_profile

    def counted_nearest(want, have):
        if want not in have:
            calls.append(want)
        return nearest(want, have)

    def counted_load(version=None, **kw):
        if version is None:
            calls.append("newest")
        return load(version, **kw)

    for module in (profiles, session):
        monkeypatch.setattr(module, "nearest_version", counted_nearest)
        monkeypatch.setattr(module, "load_profile", counted_load)
    return calls


def _release_decisions_per_run(calls, runs) -> list[tuple[str, int]]:
    from click.testing import CliRunner

    from vdecode.cli import cli
    made = []
    for args in runs:
        calls.clear()
        res = CliRunner().invoke(cli, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        made.append((str(args[0]), len(calls)))
    return made


def test_the_release_is_decided_once_per_cli_run(monkeypatch, tmp_path):
    """The view, QMP, a bundle and triage (one VM) each decide the QEMU release once."""
    calls = _count_release_decisions(monkeypatch)
    sample = ROOT / "samples" / "basic-core.vdb"
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / sample.name).symlink_to(sample)
    runs = [("view", sample, "--queue", "0"), ("qmp", sample), ("report", sample, "-o",
            tmp_path / "r.html"), ("bundle", sample, "-o", tmp_path / "b.vdb"),
            ("triage", "--workers", "1", tmp_path / "fleet")]
    assert _release_decisions_per_run(calls, runs) == [(r[0], 1) for r in runs]


def test_the_core_reader_decides_the_release_for_the_machine(monkeypatch, captures, tmp_path):
    """A real QEMU core: the reader decides the release (its layouts are tried in its light) and
    the machine answers with that profile, deciding nothing again; the same with a log."""
    c = captures["basic"]
    core, log = c.dump("qemu-core"), c.log("early")
    with vdecode.open(str(core)) as m:
        assert m.session.dump.qemu.release == m.profile.version == "7.2"
    calls = _count_release_decisions(monkeypatch)
    runs = [("view", core, "--queue", "0"), ("qmp", core), ("view", core, "--log", log),
            ("bundle", core, "-o", tmp_path / "b.vdb")]
    assert _release_decisions_per_run(calls, runs) == [(r[0], 1) for r in runs]


def test_open_takes_qemu_as_the_cli_does():
    """``qemu=`` is ``--qemu``: the log's greeting wins and the machine says it ignored it."""
    with vdecode.open(ROOT / "samples" / "mixed-elf-early.vdb", qemu="10.0") as m:
        assert m.profile.version == "7.2"
        assert m.profile.warning.startswith("--qemu 10.0 ignored: the QMP log's greeting")
    with vdecode.open(ROOT / "samples" / "mixed-elf-early.vdb") as m:
        assert m.profile.warning is None


def test_the_api_hands_out_the_stage_records():
    """``vdecode.Queue`` is the post-mortem stage's own record: a view read with ``--all`` holds
    the very values ``machine.queue`` gives (no second copy made for the API), its JSON is that
    record's, and nothing inside can be changed."""
    import vdecode.api
    from vdecode.reconstruct.postmortem import records

    assert set(vdecode.api.__all__) == vdecode._API
    with vdecode.open(ROOT / "samples" / "basic-core.vdb") as m:
        view = m.view("virtio-net", 0, show_all=True)
        (q,) = view.queue_detail
        assert type(q) is records.Queue is vdecode.Queue and view.devices[0].queues == (q,)
        assert q == m.queue("virtio-net", 0) == m.device("virtio-net").queue(0)
        assert q.detailed and len(q.chains) == q.pending == 249
        doc = json.loads(view.to_json())
        assert doc["queue_detail"] == [q.detail_json()]
        assert doc["devices"][0]["queues"] == [q.row_json()]
        assert doc["findings"] == [records.finding_json(f) for f in view.findings]
        # a narrower view (the last 8 used entries) is another value of the same type
        assert len(m.view("virtio-net", 0).queue_detail[0].used_entries) <= 8
        with pytest.raises(TypeError):
            q.provenance["size"] = "log"
        with pytest.raises(TypeError):
            q.chains[0].preview.fields["len"] = 0
        f = m.findings[0]
        with pytest.raises(TypeError):
            f.evidence["used_idx"] = 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            view.devices = ()

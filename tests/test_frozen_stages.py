"""No stage changes another stage's output: the records the pipeline hands on are frozen.

Checked three ways: every record type is a frozen dataclass whose containers cannot be changed;
the reconstruction stages, run on a real sample with its log, leave the logged state they were
given as it was (and equal to a fresh decode of the log); and a QMP command with a side effect in
QEMU (``x-query-virtio-queue-element`` stores ``shadow_avail_idx``) answers the next command from
a new state while the machine it started from stays unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
from pathlib import Path

import pytest

from vdecode.frozen import FrozenDict, is_frozen
from vdecode.reconstruct.state.log_state import state_from_log
from vdecode.reconstruct.state.session import build_machine, make_monitor, profile_for
from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState, VirtQueueState
from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log
from vdecode.space.open import open_dump

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "mixed-elf-early.vdb"

# the records that pass from one stage to the next
RECORDS = [
    ("vdecode.sources.qemu_state", "QemuVirtioState"),
    ("vdecode.sources.qemu_state", "VirtIODeviceState"),
    ("vdecode.sources.qemu_state", "VirtQueueState"),
    ("vdecode.sources.qemu_state", "VhostDev"),
    ("vdecode.sources.qemu_state", "VhostVirtqueue"),
    ("vdecode.virtio.device", "VirtioMachine"),
    ("vdecode.virtio.device", "RingHeader"),
    ("vdecode.reconstruct.qmp.monitor", "Effect"),
    ("vdecode.reconstruct.state.instant", "QueueMove"),
    ("vdecode.space.ram_map", "RamMap"),
    *(("vdecode.reconstruct.postmortem.records", name) for name in (
        "Descriptor", "Preview", "Chain", "UsedEntry", "Rings", "Indices", "Notification",
        "PackedEvents", "Queue", "Device", "CarvedPacked", "CarvedQueue", "CarvedGroup",
        "ViewInput", "Selection", "View", "Finding")),
]


# accumulators a single function fills and hands on whole, each with why it is not frozen
BUILDERS = {
    "vdecode.reconstruct.postmortem.evidence.KeepPlan": "plan_kept_memory's accumulator of kept ranges",
    "vdecode.reconstruct.postmortem.evidence.QueueFacts": "filled by _keep_queue while it walks the queue",
    "vdecode.sources.qmp_log.model.QmpExchange": "the log reader pairs a reply with its request",
    "vdecode.sources.qmp_log.model.QmpEvent": "built by the log reader as records are parsed",
    "vdecode.sources.qmp_log.model.LoggedMonitor": "the log reader appends exchanges as it reads",
    "vdecode.sources.qmp_log.model.QmpLog": "the log reader's result, filled monitor by monitor",
}


@pytest.mark.parametrize("module, name", RECORDS, ids=[n for _, n in RECORDS])
def test_every_record_is_a_frozen_dataclass(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert dataclasses.is_dataclass(cls) and is_frozen(cls), f"{name} not frozen"


def test_no_other_mutable_dataclass():
    """Every dataclass in the package is frozen, but the named builders' accumulators."""
    import pkgutil

    import vdecode
    mutable = set()
    for info in pkgutil.walk_packages(vdecode.__path__, "vdecode."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) \
                    and obj.__module__ == info.name and not is_frozen(obj):
                mutable.add(f"{info.name}.{name}")
    assert mutable == set(BUILDERS), mutable ^ set(BUILDERS)


def test_containers_are_frozen_too():
    q = VirtQueueState(0, provenance={"used_idx": "log"})
    dev = VirtIODeviceState("/machine/x", queues={0: q}, absent_queues={3})
    state = QemuVirtioState(devices=[dev])
    assert isinstance(state.devices, tuple)
    assert isinstance(dev.queues, FrozenDict) and isinstance(dev.absent_queues, frozenset)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.used_idx = 1
    with pytest.raises(TypeError):
        dev.queues[1] = q
    with pytest.raises(TypeError):
        q.provenance["used_idx"] = "dump"
    # a change is a new record, with where the value came from
    q2 = q.evolve({"used_idx": "dump"}, used_idx=5)
    assert (q.used_idx, dict(q.provenance)) == (None, {"used_idx": "log"})
    assert (q2.used_idx, dict(q2.provenance)) == (5, {"used_idx": "dump"})
    # triage sends records between processes
    assert pickle.loads(pickle.dumps(state)) == state


@pytest.fixture(scope="module")
def sample():
    dump = open_dump(str(SAMPLE))
    knowledge = LogKnowledge.from_log(dump.qmp_log)
    yield dump, knowledge
    dump.close()


def test_reconstruction_leaves_its_inputs_alone(sample):
    dump, knowledge = sample
    profile = profile_for(knowledge, dump.qemu)
    logged = state_from_log(knowledge, profile)
    before = pickle.dumps(logged)
    machine, _ = build_machine(dump, knowledge, profile)
    # the dump instant differs from the log (vm-running, counters) ...
    assert machine.state != logged
    # ... and the log's state is what it was, equal to a fresh decode
    assert pickle.dumps(logged) == before
    assert state_from_log(knowledge, profile) == logged


def test_a_side_effect_makes_a_new_state(sample):
    dump, knowledge = sample
    profile = profile_for(knowledge, dump.qemu)
    machine, _ = build_machine(dump, knowledge, profile)
    dev = next(d for d in machine.state.devices if d.queues and d.name == "virtio-net")
    shadow = dev.queues[0].shadow_avail_idx
    monitor = make_monitor(machine, profile, None, None)
    monitor.handle({"execute": "qmp_capabilities"})
    reply = monitor.handle({"execute": "x-query-virtio-queue-element",
                            "arguments": {"path": dev.canonical_path, "queue": 0}})
    assert "return" in reply, reply
    after = monitor.machine.find_device(dev.canonical_path).queues[0]
    assert after.shadow_avail_idx == reply["return"]["avail"]["idx"]
    assert after.provenance["shadow_avail_idx"] == "replayed"
    assert machine.find_device(dev.canonical_path).queues[0].shadow_avail_idx == shadow


def test_profile_tables_refuse_changes():
    """A profile's tables are read once and shared by every answer: a caller cannot change them
    for the next one, and they still compare equal to plain JSON."""
    import json

    from vdecode.frozen import FrozenDict, FrozenList
    from vdecode.profiles import load_profile
    features = load_profile("7.2").table("features")
    assert isinstance(features, FrozenDict)
    rows = next(v for v in features.values() if isinstance(v, list))
    assert isinstance(rows, FrozenList)
    with pytest.raises(TypeError):
        rows.append({})
    with pytest.raises(TypeError):
        features["status"] = []
    assert json.loads(json.dumps(features)) == features


# --- the record decorator: what @dataclass(frozen=True) gave, without per-class generated code ---

def _twins(**params):
    """The same class declared with ``record`` and with ``dataclass``."""
    from vdecode.frozen import record

    def body():
        ns = {"__annotations__": {"a": "int", "b": "str", "c": "list", "d": "dict"},
              "__module__": __name__, "__qualname__": "Rec",
              "b": "x", "c": dataclasses.field(default_factory=list, compare=False),
              "d": dataclasses.field(default_factory=dict, repr=False)}
        return type("Rec", (), ns)
    frozen = params.pop("frozen", True)
    return (record(body(), frozen=frozen, **params),
            dataclasses.dataclass(body(), frozen=frozen, **params))


@pytest.mark.parametrize("frozen", [True, False])
def test_record_behaves_like_dataclass(frozen):
    mine, theirs = _twins(frozen=frozen)
    for args in [(1,), (1, "y"), (2, "x", [1]), (1, "x", [], {"k": 1})]:
        m, t = mine(*args), theirs(*args)
        assert repr(m) == repr(t)
        for other in [(1,), (1, "y"), (2, "x", [9]), (1, "x", [5], {"k": 1})]:
            assert (m == mine(*other)) == (t == theirs(*other))
            assert (m != mine(*other)) == (t != theirs(*other))
        assert m != t and (m == t) is False                  # another class is never equal
        assert dataclasses.asdict(m) == dataclasses.asdict(t)
        assert dataclasses.astuple(dataclasses.replace(m, a=7)) == \
            dataclasses.astuple(dataclasses.replace(t, a=7))
    assert is_frozen(mine) is frozen
    if frozen:
        assert hash(mine(1, "y", [1], ())) == hash(mine(1, "y", [2], ())) \
            == hash(theirs(1, "y", [3], ()))                      # c is not compared
        with pytest.raises(dataclasses.FrozenInstanceError):
            mine(1).a = 2
        with pytest.raises(dataclasses.FrozenInstanceError):
            del mine(1).a
        with pytest.raises(dataclasses.FrozenInstanceError):
            mine(1).other = 2                                 # nor a new attribute
        import copy
        assert copy.deepcopy(mine(1, "y")) == mine(1, "y")
        q = VirtQueueState(3, used_idx=4)                     # a record module-level, to pickle
        assert pickle.loads(pickle.dumps(q)) == q and copy.copy(q) == q
    else:
        assert mine.__hash__ is None and theirs.__hash__ is None      # mutable and eq: unhashable


def test_record_keeps_what_a_class_defines_and_eq_false_keeps_identity():
    from vdecode.frozen import record

    @record
    class Own:
        a: int

        def __repr__(self) -> str:
            return "mine"

    @record(eq=False)
    class Ident:
        a: int
    assert repr(Own(1)) == "mine" and Own(1) == Own(1)
    x = Ident(1)
    assert x == x and x != Ident(1) and hash(x) == object.__hash__(x)


def test_record_init_is_a_dataclass_init():
    import inspect

    from vdecode.frozen import record
    mine, theirs = _twins()
    assert str(inspect.signature(mine)) == str(inspect.signature(theirs))
    assert mine(1).c is not mine(1).c                        # a fresh default_factory value
    with pytest.raises(TypeError):
        mine()                                               # a is required
    with pytest.raises(TypeError):
        mine(1, "x", [], {}, 5)

    @record
    class Derived:
        a: int
        b: int = 0

        def __post_init__(self) -> None:
            object.__setattr__(self, "b", self.a * 2)
    assert Derived(3).b == 6 and Derived.__doc__ == "Derived(a: 'int', b: 'int' = 0)"
    with pytest.raises(TypeError, match="follows default argument"):
        record(type("Bad", (), {"__annotations__": {"a": "int", "b": "int"}, "a": 1,
                                "__module__": __name__}))
    with pytest.raises(TypeError, match="plain fields only"):
        record(type("KwOnly", (), {"__annotations__": {"a": "int"}, "__module__": __name__,
                                   "a": dataclasses.field(kw_only=True)}))

"""Put the inputs together into one offline QMP monitor.

A QEMU process core holds QEMU's state exactly: it wins, and a log given as well is only compared
with it. Without a core, the log's replies give QEMU's state as of the log, moved to the dump
instant by :func:`~vdecode.reconstruct.state.instant.advance_to_dump`. The version of the profile (name
tables, error texts) comes from the core, else the log's greeting, else ``--qemu``, else the
newest profile (:func:`profile_for`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from vdecode.frozen import record
from vdecode.profiles import (LearnedLabel, Profile, available_versions, decide_release,
                               load_profile, nearest_version, release_profile)
from vdecode.reconstruct.state.instant import advance_to_dump
from vdecode.reconstruct.state.log_state import state_from_log
from vdecode.reconstruct.qmp.error_replies import not_known
from vdecode.sources.qemu_state import QemuVirtioState
from vdecode.sources.qmp_log.knowledge import LogKnowledge
from vdecode.sources.qmp_log.model import LoggedMonitor
from vdecode.space.dump import Dump
from vdecode.virtio.device import VirtioMachine

if TYPE_CHECKING:            # the QMP side loads when a monitor is made (start-up of the view)
    from vdecode.reconstruct.qmp.monitor import OfflineMonitor

DEFAULT_PACKAGE = ""


def merge_knowledge(knowledges: list[LogKnowledge]) -> LogKnowledge | None:
    """One view over several logs of the same VM, given oldest first: a later reply wins."""
    if not knowledges:
        return None
    if len(knowledges) == 1:
        return knowledges[0]
    first = knowledges[0].monitor
    merged = LoggedMonitor(key=first.key, vm=first.vm, vm_uuid=first.vm_uuid)
    for k in knowledges:
        m = k.monitor
        if m.greeting is not None:
            merged.greeting, merged.greeting_t, merged.greeting_line = (m.greeting, m.greeting_t,
                                                                        m.greeting_line)
        merged.exchanges.extend(m.exchanges)
        merged.events.extend(m.events)
    return LogKnowledge(merged)


def qemu_identity(knowledge: LogKnowledge | None, core: QemuVirtioState | None
                  ) -> tuple[tuple[int, int, int] | None, str | None]:
    """QEMU's ``(major, minor, micro)`` and package string: the core's, else the log's."""
    version = (core.qemu_version if core else None) or \
        (knowledge.qemu_version if knowledge else None)
    package = (core.package if core else None) or (knowledge.qemu_package if knowledge else None)
    return version, package


def profile_for(knowledge: LogKnowledge | None, core: QemuVirtioState | None,
                requested: str | None = None) -> Profile:
    """The profile that answers, with the reason (``Profile.reason``) and any warning.

    The QEMU that ran decides: its core's version (build-id or version string), else the log's
    QMP greeting; ``requested`` (``--qemu``) only for a guest dump alone; else the newest profile.
    """
    core_v = core.qemu_version if core else None
    log_v = knowledge.qemu_version if knowledge else None
    if core_v:
        v, why = core_v, f"the QEMU core says QEMU {'.'.join(map(str, core_v))}"
    elif log_v:
        v, why = log_v, f"the QMP log's greeting says QEMU {'.'.join(map(str, log_v))}"
    elif requested:
        return load_profile(requested, reason=f"--qemu {requested}")
    else:
        return load_profile(None)
    dotted = ".".join(map(str, v))
    # the core reader decided the release already (its layouts were tried in its light)
    release = core.release if core_v and core.release else decide_release(v)
    profile = release_profile(release, dotted, reason=why)
    if requested and nearest_version(requested, available_versions())[0] != profile.version:
        profile = replace(profile, warning=(f"--qemu {requested} ignored: {why}"
                                            + (f"; {profile.warning}" if profile.warning else "")))
    return profile


def build_machine(dump: Dump, knowledge: LogKnowledge | None, profile: Profile, *,
                  logged: QemuVirtioState | None = None) -> tuple[VirtioMachine, list[str]]:
    """The machine state at the dump instant, and notes on how it was derived.

    :param logged: ``state_from_log(knowledge, profile)`` when the caller has it already.
    """
    notes: list[str] = [f"{dump.path}: {w}" for w in dump.info.get("warnings", [])]
    if knowledge is not None and logged is None:
        logged = state_from_log(knowledge, profile)
    if dump.qemu is not None:
        machine = VirtioMachine(dump.qemu, dump.space)
        if logged is not None:
            notes.extend(compare_with_log(dump.qemu, logged))
            if dump.info.get("layout_derived"):
                notes.append(f"{dump.path}: {confirm_derived(dump.qemu, logged)}")
        return machine, notes
    if knowledge is None:
        machine = VirtioMachine(QemuVirtioState(source="none"), dump.space)
        notes.append(f"{dump.path}: no QMP log and no QEMU core: QEMU's device list, features and "
                     f"ring addresses are unknown; give --log with an earlier QMP transcript")
        return machine, notes
    if dump.space is None:
        # a log alone: no dump instant to move to, no guest RAM to read; the log's replies stand
        return VirtioMachine(logged, None), notes
    # the ring checks and the carver load when a log's state is built, not for a core's
    from vdecode.reconstruct.rings.match import replace_stale_rings
    from vdecode.reconstruct.rings.unlogged import fill_unlogged_queues
    from vdecode.space.firmware import machine_version_of
    machine = VirtioMachine(logged, dump.space)
    # the guest's machine type: read once, by the first stage whose rule needs it
    platform = machine_version_of(dump.space)
    # the guest's architecture: an s390x guest's virtio devices are on ccw (no ISR to read)
    arch = dump.info.get("machine")
    # each stage returns a new machine: a logged ring address that no longer holds a ring (driver
    # reset) takes a carved ring, queues the log never asked get the carver's, then the counters
    # move to the dump instant
    for stage in (partial(replace_stale_rings, profile=profile, platform=platform, guest_arch=arch),
                  partial(fill_unlogged_queues, profile=profile),
                  partial(advance_to_dump, profile=profile, platform=platform, guest_arch=arch)):
        machine, said = stage(machine)
        notes.extend(said)
    return machine, notes


def compare_with_log(core: QemuVirtioState, logged: QemuVirtioState) -> list[str]:
    """Differences between the core (which wins) and the log's static facts, for stderr."""
    notes = []
    paths = [d.canonical_path for d in core.devices]
    for dev in logged.devices:
        if dev.canonical_path not in paths:
            notes.append(f"log names {dev.canonical_path}, which the QEMU core does not have "
                         f"(unplugged since?)")
            continue
        cdev = core.devices[paths.index(dev.canonical_path)]
        for qn, q in dev.queues.items():
            cq = cdev.queues.get(qn)
            if cq is not None and q.desc and (cq.desc, cq.avail, cq.used) != (q.desc, q.avail,
                                                                                q.used):
                notes.append(f"{dev.canonical_path} queue {qn}: rings moved since the log "
                             f"(log desc {q.desc:#x}, core desc {cq.desc:#x}); using the core's")
    return notes


# values a driver sets once (features, rings, sizes) or QEMU fixes at realize: a log taken before
# the dump still holds them, so they check a layout derived from the core
_PINNED_DEVICE = {"host-features": "host_features", "device-endian": "device_endian",
                  "num-vqs": "num_vqs", "bus-name": "bus_name"}
_PINNED_QUEUE = {"vring-num": "vring_num", "vring-desc": "desc", "vring-avail": "avail",
                 "vring-used": "used"}


def confirm_derived(core: QemuVirtioState, logged: QemuVirtioState) -> str:
    """How far the log's replies agree with a core read through a layout derived from it (the
    fields each reply pins): ``layout derived from the core: the log agrees on ...``."""
    by_path = {d.canonical_path: d for d in core.devices}
    counts: dict[str, list[int]] = {}
    for dev in logged.devices:
        cdev = by_path.get(dev.canonical_path)
        if cdev is None:
            continue
        pairs = [(k, getattr(dev, f), getattr(cdev, f)) for k, f in _PINNED_DEVICE.items()]
        for qn, q in dev.queues.items():
            cq = cdev.queues.get(qn)
            if cq is not None:
                pairs += [(k, getattr(q, f), getattr(cq, f)) for k, f in _PINNED_QUEUE.items()]
        for key, want, got in pairs:
            if want is None:
                continue
            row = counts.setdefault(key, [0, 0])
            if key == "bus-name":               # QEMU prints a NULL bus_name as ""
                want, got = want or "", got or ""
            if key == "host-features":          # a label no table row names reads back as no bit
                row[0] += got is not None and want & ~got == 0
            else:
                row[0] += want == got
            row[1] += 1
    if not counts:
        return "layout derived from the core: the log pins none of its fields (no device in both)"
    said = ", ".join(f"{k} {a}/{n}" for k, (a, n) in counts.items())
    off = [k for k, (a, n) in counts.items() if a < n]
    return (f"layout derived from the core: the log's replies agree on {said}"
            + (f" (where they differ, the driver may have reset since the log, or the derived "
               f"offset of {', '.join(off)} is wrong)" if off else ""))


NEEDS = {
    "x-query-virtio": "the device list is QEMU state: give --log with an earlier x-query-virtio "
                      "reply, or a QEMU process core",
    "x-query-virtio-status": "device status is QEMU state: give --log with an earlier "
                             "x-query-virtio-status reply for this path, or a QEMU process core",
    "x-query-virtio-queue-status": "ring addresses and sizes are QEMU state: give --log with an "
                                   "earlier x-query-virtio-queue-status reply, or a QEMU core",
    "x-query-virtio-vhost-queue-status": "vhost state is QEMU state: give a QEMU process core or "
                                         "--log",
    "x-query-virtio-queue-element": "the ring addresses of the queue are QEMU state: give --log "
                                    "with an earlier x-query-virtio-queue-status reply, or a QEMU "
                                    "core",
}


def _unanswerable(command: str, machine: VirtioMachine, args: dict[str, Any]) -> Any:
    raise not_known(f"{command}: {NEEDS[command]}")


def make_monitor(machine: VirtioMachine, profile: Profile, version: tuple[int, int, int] | None,
                 package: str | None) -> OfflineMonitor:
    """A monitor over the machine; with neither log nor core every virtio command says what input
    would answer it."""
    from vdecode.reconstruct.qmp.commands import COMMANDS
    from vdecode.reconstruct.qmp.monitor import OfflineMonitor
    if machine.state.source == "none":
        handlers = {name: partial(_unanswerable, name) for name in COMMANDS}
    else:
        handlers = {name: _bound(fn, profile) for name, fn in COMMANDS.items()}
    # a guest dump alone: the greeting of the profile's release (the profile decided it, once)
    if version is None:
        version = tuple(int(x) for x in profile.release.split(".")[:3])  # type: ignore[assignment]
    return OfflineMonitor(profile, machine, handlers, version,
                          package or DEFAULT_PACKAGE)


def _bound(fn: Callable[[VirtioMachine, Profile, dict[str, Any]], Any], profile: Profile
           ) -> Callable[[VirtioMachine, dict[str, Any]], Any]:
    return lambda machine, args: fn(machine, profile, args)


# --- the one entry: inputs -> session --------------------------------------------------------


@record
class Inputs:
    """What the user gave, opened: the dump (or core + guest dump), the logs' merged knowledge
    (a bundle's embedded log when no log is given), each log's ``(path, format)``, and the log
    readers' warnings about skipped records."""

    dump: Dump
    knowledge: LogKnowledge | None
    logs: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()


@record
class Session:
    """Every stage's output for one set of inputs: the profile that answers, the machine at the
    dump instant, the log's own state (``logged``) and end time, and how it was all derived."""

    inputs: Inputs
    profile: Profile
    machine: VirtioMachine
    notes: tuple[str, ...]
    logged: QemuVirtioState | None
    log_end: float | None

    @property
    def dump(self) -> Dump:
        return self.inputs.dump

    @property
    def knowledge(self) -> LogKnowledge | None:
        return self.inputs.knowledge


def open_inputs(dumps: str | os.PathLike | tuple | list, logs: tuple | list = (), *,
                log_format: str | None = None, vm: str | None = None,
                cache_dir: str | os.PathLike | None = None,
                binary: str | os.PathLike | None = None,
                progress: Callable[[int, int], None] | None = None) -> Inputs:
    """Open the inputs every command and the API start from.

    :param dumps: one dump, or a QEMU process core and a guest dump of the same instant; none
        with logs: the logs alone (QEMU's state as of their last replies, no guest RAM).
    :param logs: QMP logs taken before the dump, oldest first (a later reply wins).
    :raises VdecodeError: an input vdecode cannot use.
    """
    from vdecode.space.open import open_dumps

    if logs:                    # the log format readers load only when there is a log to read
        from vdecode.sources.qmp_log.read import read_qmp_log
    knowledges, used, warnings = [], [], []
    for path in logs:
        log = read_qmp_log(str(path), log_format, vm, latest_only=True)
        warnings.extend(log.warnings)
        knowledges.append(LogKnowledge.from_log(log, vm))
        used.append((str(path), log.format))
    knowledge = merge_knowledge(knowledges)
    paths = (dumps,) if isinstance(dumps, (str, os.PathLike)) else tuple(dumps)
    if not paths and knowledge is not None:
        # a log alone (vdecode record's rolling log after the VM is gone): QEMU's state as the
        # log's last replies give it; nothing reads guest RAM
        dump = Dump(path="(no dump)", format="none", space=None)
        return Inputs(dump, knowledge, tuple(used), tuple(warnings))
    dump = open_dumps([str(p) for p in paths], cache_dir=cache_dir, progress=progress,
                      binary=binary)
    if knowledge is None and dump.qmp_log is not None:      # a bundle's embedded log
        knowledge = LogKnowledge.from_log(dump.qmp_log)
    return Inputs(dump, knowledge, tuple(used), tuple(warnings))


def _build_strings(profile: Profile, core: QemuVirtioState | None) -> tuple[Profile, list[str]]:
    """The profile answering with the strings the core's executable holds where they differ from
    its tables (``QemuVirtioState.labels``, read by :mod:`vdecode.sources.qemu_core.strings`)."""
    if core is None or not core.labels:
        return profile, []
    where = core.labels_from or "the QEMU executable"
    # (section, key, desc), or (section, key, desc, after) for a row the profile lacks
    labs = tuple(LearnedLabel(lab[0], lab[1], lab[2], "the executable's table", where,
                              lab[3] if len(lab) > 3 else None) for lab in core.labels)
    shown = sorted({(lab[0], lab[1], lab[2]) for lab in core.labels
                    if not lab[0].startswith("devices/")} |
                   {("device", lab[1], lab[2]) for lab in core.labels
                    if lab[0].startswith("devices/")})
    texts = "; ".join(f"{desc!r} ({sec} {key})" for sec, key, desc in shown)
    return (replace(profile, learned=profile.learned + labs),
            [f"strings from {where} (its own tables, not profile {profile.version}'s): {texts}"])


def build_session(inputs: Inputs, requested: str | None = None) -> Session:
    """The pipeline, once for every caller (CLI commands, bundles, triage, the Python API):
    the profile, the machine at the dump instant, and the log's own state for the findings."""
    from vdecode.reconstruct.state.labels import learn_labels
    k = inputs.knowledge
    profile, built = _build_strings(profile_for(k, inputs.dump.qemu, requested), inputs.dump.qemu)
    # this build's own strings where the log prints one the profile's tables do not hold
    profile, learned = learn_labels(k, profile, inputs.logs[-1][0] if inputs.logs else "the log")
    learned = built + learned
    logged = state_from_log(k, profile) if k is not None else None       # a frozen value: shared
    machine, notes = build_machine(inputs.dump, k, profile, logged=logged)
    return Session(inputs, profile, machine, tuple(learned + notes), logged,
                   k.span[1] if k is not None else None)

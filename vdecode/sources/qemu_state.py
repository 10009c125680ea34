"""QEMU's own virtio state, as C values: what ``VirtIODevice``/``VirtQueue``/``vhost_dev`` held.

Two sources fill these records: a QEMU process core (every field read from QEMU's structs) and a
QMP log (fields decoded back from earlier replies; what the log cannot say stays ``None``). The
virtio model and the reconstruction read them; rendering turns them back into QMP replies.
Field names are QEMU 7.2's (``include/hw/virtio/virtio.h``, ``hw/virtio/virtio.c``,
``include/hw/virtio/vhost.h``), so ``git grep`` in QEMU finds the twin.

``provenance`` maps a field name to where its value came from: ``"core"`` (QEMU's memory),
``"log"`` (an earlier QMP reply), ``"dump"`` (guest memory), ``"inferred"`` (a rule, see the
reconstruction), so the human output can say how sure a value is.

The records are frozen: a stage that changes a value (the reconstruction moving logged counters
to the dump instant, a QMP command's side effect) returns a new record through :meth:`evolve`,
which also records where the new value came from. Constructors take plain dicts, lists and sets
and keep them as :class:`~vdecode.frozen.FrozenDict`, tuples and frozensets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, replace
from typing import Any

from vdecode.frozen import FrozenDict, freeze_map, record

# QEMU 7.2 include/hw/virtio/virtio.h enum virtio_device_endian
VIRTIO_DEVICE_ENDIAN_UNKNOWN = 0
VIRTIO_DEVICE_ENDIAN_LITTLE = 1
VIRTIO_DEVICE_ENDIAN_BIG = 2


# where a value came from (``provenance`` values)
CORE, LOG, DUMP, INFERRED, CARVED, REPLAYED = "core", "log", "dump", "inferred", "carved", "replayed"
#: a value of which only some bits are known: the negotiated features of a device whose log holds
#: no x-query-virtio-status reply (QEMU 11.1 aborts on it), with the bits its rings show
PARTIAL = "inferred-partial"


def marks(source: str, *fields: str) -> dict[str, str]:
    """``{field: source}`` for :meth:`evolve`'s ``marks``: these fields now come from ``source``."""
    return dict.fromkeys(fields, source)


class _Evolving:
    """What every state record shares: a changed copy instead of a change in place."""

    def evolve(self, marks: Mapping[str, str] | None = None, **changes: Any):
        """A copy with ``changes``; ``marks`` (field name -> source) joins ``provenance``."""
        if marks:
            changes["provenance"] = self.provenance | dict(marks)  # type: ignore[attr-defined]
        return replace(self, **changes)  # type: ignore[type-var]


def _keep(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)     # __post_init__ of a frozen dataclass


@record
class VhostVirtqueue:
    """``struct vhost_virtqueue`` fields that ``x-query-virtio-vhost-queue-status`` reports."""

    kick: int = 0
    call: int = 0
    desc: int = 0          # host virtual addresses (Hva) or IOVAs
    avail: int = 0
    used: int = 0
    num: int = 0
    desc_phys: int = 0
    desc_size: int = 0
    avail_phys: int = 0
    avail_size: int = 0
    used_phys: int = 0
    used_size: int = 0


@record
class VhostDev(_Evolving):
    """``struct vhost_dev`` fields that ``x-query-virtio-status`` reports under ``vhost-dev``."""

    n_mem_sections: int = 0
    n_tmp_sections: int = 0
    nvqs: int = 0
    vq_index: int = 0
    features: int = 0
    acked_features: int = 0
    backend_features: int = 0
    protocol_features: int = 0
    max_queues: int = 0
    backend_cap: int = 0
    log_enabled: bool = False
    log_size: int = 0
    vqs: Mapping[int, VhostVirtqueue] = field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        _keep(self, "vqs", freeze_map(self.vqs))


@record
class VirtQueueState(_Evolving):
    """One ``VirtQueue`` (split ring). ``None`` means the source could not say.

    ``desc``/``avail``/``used`` are guest-physical (``vq->vring.desc`` …).
    """

    queue_index: int
    vring_num: int | None = None
    vring_num_default: int | None = None
    vring_align: int | None = None
    desc: int | None = None
    avail: int | None = None
    used: int | None = None
    last_avail_idx: int | None = None
    shadow_avail_idx: int | None = None
    used_idx: int | None = None
    inuse: int | None = None
    signalled_used: int | None = None
    signalled_used_valid: bool | None = None
    notification: bool | None = None
    provenance: Mapping[str, str] = field(default_factory=FrozenDict)
    as_of: float | None = None           # when these values held (log reply time); None = now

    def __post_init__(self) -> None:
        _keep(self, "provenance", freeze_map(self.provenance))


@record
class VirtIODeviceState(_Evolving):
    """One ``VirtIODevice`` on QEMU's ``virtio_list``. ``None`` means the source could not say."""

    canonical_path: str
    name: str | None = None
    device_id: int | None = None
    guest_features: int | None = None
    host_features: int | None = None
    backend_features: int | None = None
    status: int | None = None
    isr: int | None = None
    queue_sel: int | None = None
    vm_running: bool | None = None
    broken: bool | None = None
    disabled: bool | None = None
    use_started: bool | None = None
    started: bool | None = None
    start_on_kick: bool | None = None
    disable_legacy_check: bool | None = None
    bus_name: str | None = None          # NULL in QEMU prints as "": keep None for NULL
    use_guest_notifier_mask: bool | None = None
    device_endian: int | None = None
    vhost_started: bool | None = None
    vhost_dev: VhostDev | None = None
    num_vqs: int | None = None           # virtio_get_num_queues(): leading queues with vring.num != 0
    queues: Mapping[int, VirtQueueState] = field(default_factory=FrozenDict)
    # queue numbers known to have vring.num == 0 (QEMU answered "Invalid virtqueue number")
    absent_queues: frozenset[int] = field(default_factory=frozenset)
    provenance: Mapping[str, str] = field(default_factory=FrozenDict)
    as_of: float | None = None           # when these values held (log reply time); None = now

    def __post_init__(self) -> None:
        _keep(self, "queues", freeze_map(self.queues))
        _keep(self, "absent_queues", frozenset(self.absent_queues))
        _keep(self, "provenance", freeze_map(self.provenance))

    def with_queue(self, queue: VirtQueueState) -> VirtIODeviceState:
        """A copy with ``queue`` in place of the queue of its number."""
        return replace(self, queues=self.queues | {queue.queue_index: queue})


@record
class QemuVirtioState:
    """Everything known of QEMU's virtio side at the dump instant.

    ``devices`` is in ``virtio_list`` order (realization order); ``x-query-virtio`` prints it
    reversed. ``qemu_version`` is ``(major, minor, micro)`` when known, ``package`` the
    greeting's package string.
    """

    devices: tuple[VirtIODeviceState, ...] = ()
    qemu_version: tuple[int, int, int] | None = None
    package: str | None = None
    source: str = ""                     # "core", "log" or "core+log"
    #: the build's own strings where they differ from the profile's tables, read from its
    #: executable: ``(section, key, desc)`` as :class:`~vdecode.profiles.LearnedLabel` has them
    labels: tuple[tuple, ...] = ()
    #: where ``labels`` were read (the executable's path)
    labels_from: str | None = None
    #: the profile release the core reader decided for this QEMU (``"7.2"``), once: the layouts
    #: are tried in its light and the machine answers with its profile; ``None`` for a log's state
    #: or a bundle's (the profile is decided from ``qemu_version`` then). Not compared: how the
    #: release was decided is not QEMU's state.
    release: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _keep(self, "devices", tuple(self.devices))
        _keep(self, "labels", tuple(tuple(x) for x in self.labels))
        if self.qemu_version is not None:
            _keep(self, "qemu_version", tuple(self.qemu_version))

    def with_device(self, device: VirtIODeviceState) -> QemuVirtioState:
        """A copy with ``device`` in place of the device of its path (list order kept)."""
        return replace(self, devices=tuple(device if d.canonical_path == device.canonical_path
                                           else d for d in self.devices))

"""``x-query-virtio-queue-status`` and ``x-query-virtio-vhost-queue-status`` (QEMU 7.2
``hw/virtio/virtio.c``; reference §3.3 and §3.4)."""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.qapi import shape
from vdecode.reconstruct.qmp.error_replies import not_known, qmp_error
from vdecode.reconstruct.qmp.status import find_device
from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
from vdecode.virtio.device import VirtioMachine


def find_queue(profile: Profile, dev: VirtIODeviceState, queue: int) -> VirtQueueState:
    """``queue >= VIRTIO_QUEUE_MAX || !virtio_queue_get_num(vdev, queue)`` is an error."""
    queue_max = profile.table("devices")["queue_max"]
    if queue >= queue_max or queue in dev.absent_queues:
        raise qmp_error(profile, "invalid_queue", queue)
    q = dev.queues.get(queue)
    if q is None:
        # virtio_get_num_queues counts leading queues with vring.num != 0; devices add their
        # queues contiguously (virtio-net deletes from the end), so none lies past that count.
        if dev.num_vqs is not None and queue >= dev.num_vqs:
            raise qmp_error(profile, "invalid_queue", queue)
        raise not_known(f"queue {queue} of {dev.canonical_path} (needs an "
                        f"x-query-virtio-queue-status reply for it in the log, or a QEMU core)")
    if q.vring_num == 0:
        raise qmp_error(profile, "invalid_queue", queue)
    return q


def x_query_virtio_queue_status(machine: VirtioMachine, profile: Profile,
                                args: dict[str, Any]) -> dict[str, Any]:
    dev = find_device(machine, profile, args["path"], "x-query-virtio-queue-status")
    q = find_queue(profile, dev, args["queue"])
    last_avail = q.last_avail_idx
    shadow = q.shadow_avail_idx
    if dev.vhost_started and dev.vhost_dev is not None:
        # vhost branch: last-avail-idx is vhost_get_vring_base()'s return code (0 on success)
        # for queues of this vhost_dev; shadow-avail-idx is never set.
        h = dev.vhost_dev
        last_avail = 0 if h.vq_index <= q.queue_index < h.vq_index + h.nvqs else None
        shadow = None
    values = {
        "name": dev.name, "queue-index": q.queue_index, "inuse": q.inuse,
        "vring-num": q.vring_num, "vring-num-default": q.vring_num_default,
        "vring-align": q.vring_align, "vring-desc": q.desc, "vring-avail": q.avail,
        "vring-used": q.used, "last-avail-idx": last_avail, "shadow-avail-idx": shadow,
        "used-idx": q.used_idx, "signalled-used": q.signalled_used,
        "signalled-used-valid": q.signalled_used_valid}
    try:
        return shape(profile, "VirtQueueStatus", values)
    except KeyError as err:
        raise not_known(f"{err.args[0]} for queue {q.queue_index} of {dev.canonical_path}") from err


def x_query_virtio_vhost_queue_status(machine: VirtioMachine, profile: Profile,
                                      args: dict[str, Any]) -> dict[str, Any]:
    dev = find_device(machine, profile, args["path"], "x-query-virtio-vhost-queue-status")
    queue = args["queue"]
    if not dev.vhost_started or dev.vhost_dev is None:
        raise qmp_error(profile, "vhost_not_started", command="x-query-virtio-vhost-queue-status")
    h = dev.vhost_dev
    if queue < h.vq_index or queue >= h.vq_index + h.nvqs:
        raise qmp_error(profile, "vhost_invalid_queue", queue,
                        command="x-query-virtio-vhost-queue-status")
    # QEMU 7.2 indexes hdev->vqs[] with the absolute queue number.
    v = h.vqs.get(queue)
    if v is None:
        raise not_known(f"vhost queue {queue} of {dev.canonical_path}")
    return shape(profile, "VirtVhostQueueStatus", {
        "name": dev.name, "kick": v.kick, "call": v.call, "desc": v.desc, "avail": v.avail,
        "used": v.used, "num": v.num, "desc-phys": v.desc_phys, "desc-size": v.desc_size,
        "avail-phys": v.avail_phys, "avail-size": v.avail_size, "used-phys": v.used_phys,
        "used-size": v.used_size})

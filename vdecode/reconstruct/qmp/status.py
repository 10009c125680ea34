"""``x-query-virtio-status``: QEMU 7.2 ``qmp_x_query_virtio_status``, field by field.

Every field is QEMU state (reference §3.2); ``vhost-dev`` is present only while vhost is started.
"""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.features import features_to_reply, protocols_to_reply, status_to_reply
from vdecode.reconstruct.qmp.monitor import Effect
from vdecode.reconstruct.qmp.qapi import shape
from vdecode.reconstruct.qmp.error_replies import not_known, qmp_error
from vdecode.sources.qemu_state import PARTIAL, VirtIODeviceState
from vdecode.virtio.device import VirtioMachine

_FIELDS = ("name", "device_id", "guest_features", "host_features", "backend_features", "status",
           "isr", "queue_sel", "vm_running", "broken", "disabled", "use_started", "started",
           "start_on_kick", "disable_legacy_check", "use_guest_notifier_mask", "device_endian",
           "vhost_started", "num_vqs")


def find_device(machine: VirtioMachine, profile: Profile, path: str,
                command: str) -> VirtIODeviceState:
    """The device the ``path`` argument names, by the profile's ``devices.json`` ``device_lookup``.

    ``virtio_list`` (QEMU 7.2 ``virtio_device_find``): the device whose canonical path is exactly
    ``path``. ``object_resolve_path`` (QEMU 8.2+ ``qmp_find_virtio_device``): QOM path resolution,
    so empty components are skipped (``/machine//peripheral/...``) and a relative path names the
    one object whose path ends with it (more than one is ambiguous: no device). Only the virtio
    devices' paths are known offline, so a relative path that also fits a non-virtio object is
    answered as if it named the virtio device.

    :raises QmpError: QEMU's "not a VirtIODevice" reply for this command.
    """
    rule = profile.table("devices").get("device_lookup", "virtio_list")
    if rule == "object_resolve_path":
        dev = _resolve_path(machine, path)
    else:
        dev = machine.find_device(path)
    if dev is None:
        raise qmp_error(profile, "device_not_found", path, command=command)
    return dev


def _resolve_path(machine: VirtioMachine, path: str) -> VirtIODeviceState | None:
    """``object_resolve_path(path)`` over the known devices (qom/object.c, QEMU 10.0)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None                        # "/" or "": the root container, not a device
    if path.startswith("/"):
        want = "/" + "/".join(parts)
        return next((d for d in machine.state.devices if d.canonical_path == want), None)
    hits = [d for d in machine.state.devices
            if d.canonical_path.split("/")[-len(parts):] == parts]
    return hits[0] if len(hits) == 1 else None


def x_query_virtio_status(machine: VirtioMachine, profile: Profile,
                          args: dict[str, Any]) -> dict[str, Any]:
    dev = find_device(machine, profile, args["path"], "x-query-virtio-status")
    missing = [f for f in _FIELDS if getattr(dev, f) is None
               or dev.provenance.get(f) == PARTIAL]      # only the bits its rings show
    if missing:
        raise not_known(f"{', '.join(missing)} of {dev.canonical_path} (needs an "
                        f"x-query-virtio-status reply in the log, or a QEMU core)")
    endian = profile.table("devices")["endian"][str(dev.device_endian)]
    vhost = None
    if dev.vhost_started and dev.vhost_dev is not None:
        h = dev.vhost_dev
        vhost = shape(profile, "VhostStatus", {
            "n-mem-sections": h.n_mem_sections, "n-tmp-sections": h.n_tmp_sections,
            "nvqs": h.nvqs, "vq-index": h.vq_index,
            "features": features_to_reply(profile, dev.device_id, h.features),
            "acked-features": features_to_reply(profile, dev.device_id, h.acked_features),
            "backend-features": features_to_reply(profile, dev.device_id, h.backend_features),
            "protocol-features": protocols_to_reply(profile, h.protocol_features),
            "max-queues": h.max_queues, "backend-cap": h.backend_cap,
            "log-enabled": h.log_enabled, "log-size": h.log_size})
    reply = shape(profile, "VirtioStatus", {
        "name": dev.name, "device-id": dev.device_id, "vhost-started": dev.vhost_started,
        "device-endian": endian,
        "guest-features": features_to_reply(profile, dev.device_id, dev.guest_features),
        "host-features": features_to_reply(profile, dev.device_id, dev.host_features),
        "backend-features": features_to_reply(profile, dev.device_id, dev.backend_features),
        "num-vqs": dev.num_vqs, "status": status_to_reply(profile, dev.status), "isr": dev.isr,
        "queue-sel": dev.queue_sel, "vm-running": dev.vm_running, "broken": dev.broken,
        "disabled": dev.disabled, "use-started": dev.use_started, "started": dev.started,
        "start-on-kick": dev.start_on_kick, "disable-legacy-check": dev.disable_legacy_check,
        # qobject_output_type_str prints a NULL string as ""
        "bus-name": dev.bus_name or "",
        "use-guest-notifier-mask": dev.use_guest_notifier_mask, "vhost-dev": vhost})
    # a release whose live QEMU aborts on this command (11.1.x): the reply its schema describes,
    # and a note on stderr saying so and what the member QEMU leaves unset holds
    aborts = profile.table("qapi").get("live_aborts", {}).get("x-query-virtio-status")
    if aborts:
        return Effect(reply, machine.state, (f"{dev.canonical_path}: {aborts['note']}",))
    return reply

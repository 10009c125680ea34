"""``x-query-virtio``: QEMU 7.2 ``qmp_x_query_virtio`` prepends while walking ``virtio_list``, so
the reply lists devices in reverse realization order. QEMU 8.2+ prepends while walking the QOM
composition tree; a core reader then gives the devices in walk order, so the reply is the same
reversal. With no device, 7.2 answers ``[]`` and 8.2+ fails (``errors.json`` ``no_devices``)."""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.qapi import shape
from vdecode.reconstruct.qmp.error_replies import not_known, qmp_error
from vdecode.virtio.device import VirtioMachine


def x_query_virtio(machine: VirtioMachine, profile: Profile, args: dict[str, Any]) -> list:
    out = []
    for dev in reversed(machine.state.devices):
        if dev.name is None:
            raise not_known(f"the name of {dev.canonical_path} (needs an x-query-virtio reply in "
                            f"the log, or a QEMU core)")
        out.append(shape(profile, "VirtioInfo", {"path": dev.canonical_path, "name": dev.name}))
    if not out and profile.table("errors").get("no_devices"):
        raise qmp_error(profile, "no_devices", command="x-query-virtio")
    return out

"""``x-query-virtio``: QEMU 7.2 ``qmp_x_query_virtio`` prepends while walking ``virtio_list``, so
the reply lists devices in reverse realization order."""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile
from vdecode.reconstruct.qapi import shape
from vdecode.reconstruct.qmp_errors import not_known
from vdecode.virtio.device import VirtioMachine


def x_query_virtio(machine: VirtioMachine, profile: Profile, args: dict[str, Any]) -> list:
    out = []
    for dev in reversed(machine.state.devices):
        if dev.name is None:
            raise not_known(f"the name of {dev.canonical_path} (needs an x-query-virtio reply in "
                            f"the log, or a QEMU core)")
        out.append(shape(profile, "VirtioInfo", {"path": dev.canonical_path, "name": dev.name}))
    return out

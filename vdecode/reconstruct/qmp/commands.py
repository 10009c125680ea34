"""The virtio QMP commands vdecode answers, by name: each a handler ``(machine, profile,
arguments) -> reply value`` that raises a QMP error as QEMU words it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.queue_element import x_query_virtio_queue_element
from vdecode.reconstruct.qmp.queue_status import (x_query_virtio_queue_status,
                                                  x_query_virtio_vhost_queue_status)
from vdecode.reconstruct.qmp.status import x_query_virtio_status
from vdecode.reconstruct.qmp.virtio_list import x_query_virtio
from vdecode.virtio.device import VirtioMachine

__all__ = ("COMMANDS",)

COMMANDS: dict[str, Callable[[VirtioMachine, Profile, dict[str, Any]], Any]] = {
    "x-query-virtio": x_query_virtio,
    "x-query-virtio-status": x_query_virtio_status,
    "x-query-virtio-queue-status": x_query_virtio_queue_status,
    "x-query-virtio-vhost-queue-status": x_query_virtio_vhost_queue_status,
    "x-query-virtio-queue-element": x_query_virtio_queue_element,
}

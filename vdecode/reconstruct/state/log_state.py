"""QEMU's virtio state as an earlier QMP log tells it: replies decoded back into C values.

Static facts (device list and order, paths, names, features, ``num-vqs``, ring addresses and
sizes) are exact from any earlier reply (reference: qemu72-virtio-qmp.md §3, "S" fields). Dynamic
counters are the values *at the time of the reply*; :mod:`vdecode.reconstruct.state.instant` moves them
to the dump instant. ``x-query-virtio-queue-element`` replies in the log are replayed for their
side effect on ``shadow_avail_idx`` (QEMU 7.2 ``vring_avail_idx()`` stores what it reads).
"""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.features import (features_from_reply, protocols_from_reply,
                                          status_from_reply)
from vdecode.sources.qemu_state import (INFERRED, QemuVirtioState, VhostDev, VhostVirtqueue,
                                        VirtIODeviceState, VirtQueueState, marks)
from vdecode.sources.qmp_log.knowledge import LogKnowledge
from vdecode.sources.qmp_log.model import QmpExchange

_ENDIAN = {"unknown": 0, "little": 1, "big": 2}


def _c_name(member: str) -> str:
    """Provenance is keyed by QEMU's field names: ``shadow-avail-idx`` -> ``shadow_avail_idx``
    (and ``vring-desc`` -> ``vring_desc``, QEMU's ``vq->vring.desc``)."""
    return member.replace("-", "_")


def _ok(x: QmpExchange | None) -> Any:
    if x is None or not isinstance(x.reply, dict) or "return" not in x.reply:
        return None
    return x.reply["return"]


def _when(x: QmpExchange) -> float | None:
    return x.t_reply if x.t_reply is not None else x.t


def _order_key(x: QmpExchange) -> tuple[float, int]:
    t = _when(x)
    return (t if t is not None else float("-inf"), x.line_reply or x.line or 0)


def _status_to_device(profile: Profile, dev: dict[str, Any], r: dict[str, Any]) -> None:
    """Fold one ``x-query-virtio-status`` reply into ``dev``, the builder's draft of a
    :class:`VirtIODeviceState` (its constructor's keywords)."""
    dev["name"] = r.get("name", dev.get("name"))
    dev["device_id"] = r.get("device-id")
    did = dev["device_id"] if dev["device_id"] is not None else -1
    for member, attr in (("guest-features", "guest_features"), ("host-features", "host_features"),
                         ("backend-features", "backend_features")):
        if isinstance(r.get(member), dict):
            dev[attr] = features_from_reply(profile, did, r[member])
    if isinstance(r.get("status"), dict):
        dev["status"] = status_from_reply(profile, r["status"])
    dev["device_endian"] = _ENDIAN.get(r.get("device-endian"), None)
    for member, attr in (("num-vqs", "num_vqs"), ("isr", "isr"), ("queue-sel", "queue_sel"),
                         ("vm-running", "vm_running"), ("broken", "broken"),
                         ("disabled", "disabled"), ("use-started", "use_started"),
                         ("started", "started"), ("start-on-kick", "start_on_kick"),
                         ("disable-legacy-check", "disable_legacy_check"),
                         ("use-guest-notifier-mask", "use_guest_notifier_mask"),
                         ("vhost-started", "vhost_started")):
        if member in r:
            dev[attr] = r[member]
    # QEMU prints a NULL bus_name as "" (qobject_output_type_str); both read back as "".
    dev["bus_name"] = r.get("bus-name", dev.get("bus_name"))
    v = r.get("vhost-dev")
    if isinstance(v, dict):
        old = dev.get("vhost_dev")
        dev["vhost_dev"] = VhostDev(
            n_mem_sections=v.get("n-mem-sections", 0), n_tmp_sections=v.get("n-tmp-sections", 0),
            nvqs=v.get("nvqs", 0), vq_index=v.get("vq-index", 0),
            features=features_from_reply(profile, did, v.get("features", {})),
            acked_features=features_from_reply(profile, did, v.get("acked-features", {})),
            backend_features=features_from_reply(profile, did, v.get("backend-features", {})),
            protocol_features=protocols_from_reply(profile, v.get("protocol-features", {})),
            max_queues=v.get("max-queues", 0), backend_cap=v.get("backend-cap", 0),
            log_enabled=v.get("log-enabled", False), log_size=v.get("log-size", 0),
            vqs=old.vqs if old else {})
    dev["provenance"].update({_c_name(k): "log" for k in r})


def _queue_from_reply(r: dict[str, Any], queue: int, as_of: float | None) -> VirtQueueState:
    return VirtQueueState(
        queue_index=r.get("queue-index", queue), vring_num=r.get("vring-num"),
        vring_num_default=r.get("vring-num-default"), vring_align=r.get("vring-align"),
        desc=r.get("vring-desc"), avail=r.get("vring-avail"), used=r.get("vring-used"),
        last_avail_idx=r.get("last-avail-idx"), shadow_avail_idx=r.get("shadow-avail-idx"),
        used_idx=r.get("used-idx"), inuse=r.get("inuse"), signalled_used=r.get("signalled-used"),
        signalled_used_valid=r.get("signalled-used-valid"),
        provenance={_c_name(k): "log" for k in r}, as_of=as_of)


def _queues_from_vhost_replies(devices: dict[str, dict[str, Any]], profile: Profile) -> None:
    """A device whose log holds only vhost queue replies: an 11.1 log has no status reply (live
    11.1 aborts on it) and no queue reply of a running vhost device (asking one sends the backend
    GET_VRING_BASE, which stops its ring). Such a reply says vhost was started, and
    ``vhost_virtqueue_start`` copied the queue's ring addresses and ``vring.num`` into it. A queue
    the driver never set up shows zeros there (the copy is skipped); its ``vring.num`` is then
    ``num_default``, taken as the set-up queues' size (as for carved queues: Linux uses the
    device's maximum). Counters follow from the rings at the dump, as for carved queues."""
    align = profile.table("devices")["vring_align_default"]
    for dev in devices.values():
        vhost = dev.get("vhost_dev")
        if vhost is None or not vhost.vqs or "num_vqs" in dev or dev["queues"]:
            continue            # a status or queue reply says more
        sizes = {v.num for v in vhost.vqs.values() if v.desc_phys and v.num}
        if len(sizes) != 1:
            continue
        size = sizes.pop()
        if dev.get("vhost_started") is None:
            dev["vhost_started"] = True
            dev["provenance"]["vhost_started"] = INFERRED
        for qn, v in sorted(vhost.vqs.items()):
            set_up = bool(v.desc_phys)
            counter = None if set_up else 0
            dev["queues"][qn] = VirtQueueState(
                queue_index=qn, vring_num=v.num if set_up else size, vring_num_default=size,
                vring_align=align, desc=v.desc_phys, avail=v.avail_phys, used=v.used_phys,
                inuse=0, signalled_used=0, signalled_used_valid=False, used_idx=counter,
                last_avail_idx=counter, shadow_avail_idx=counter,
                provenance={"queue": "vhost", **marks(INFERRED, "vring_num", "vring_num_default",
                                                      "vring_align", "vring_desc", "vring_avail",
                                                      "vring_used", "inuse", "used_idx",
                                                      "last_avail_idx", "shadow_avail_idx",
                                                      "signalled_used", "signalled_used_valid")})


def state_from_log(knowledge: LogKnowledge, profile: Profile) -> QemuVirtioState:
    """Everything the log says of QEMU's virtio state, as of each device's last reply.

    Each device and queue carries ``as_of``, the time of the reply its values come from, so later
    stages can say how old a value is. The replies are folded, oldest first, into drafts (the
    records' constructor keywords) that only this function sees; what it returns is frozen.
    """
    devices: dict[str, dict[str, Any]] = {}

    def device(path: str) -> dict[str, Any]:
        if path not in devices:
            devices[path] = {"canonical_path": path, "queues": {}, "absent_queues": set(),
                             "provenance": {}}
        return devices[path]

    # x-query-virtio lists virtio_list reversed (QAPI_LIST_PREPEND): undo that.
    listing = _ok(knowledge.latest("x-query-virtio"))
    if isinstance(listing, list):
        for item in reversed(listing):
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                device(item["path"])["name"] = item.get("name")

    for x in sorted(knowledge.all("x-query-virtio-status"), key=_order_key):
        r = _ok(x)
        path = x.arguments.get("path")
        if isinstance(r, dict) and isinstance(path, str):
            _status_to_device(profile, device(path), r)
            device(path)["as_of"] = _when(x)

    for x in sorted(knowledge.all("x-query-virtio-queue-status"), key=_order_key):
        path, queue = x.arguments.get("path"), x.arguments.get("queue")
        if not isinstance(path, str) or not isinstance(queue, int) or x.reply is None:
            continue
        r = _ok(x)
        if isinstance(r, dict):
            device(path)["queues"][queue] = _queue_from_reply(r, queue, _when(x))
            device(path)["absent_queues"].discard(queue)
        elif "error" in x.reply and path in devices:
            desc = str(x.reply["error"].get("desc", ""))
            if desc == profile.table("errors")["invalid_queue"] % queue:
                device(path)["absent_queues"].add(queue)
                device(path)["queues"].pop(queue, None)

    for x in sorted(knowledge.all("x-query-virtio-vhost-queue-status"), key=_order_key):
        path, queue = x.arguments.get("path"), x.arguments.get("queue")
        r = _ok(x)
        if isinstance(r, dict) and isinstance(path, str) and isinstance(queue, int):
            dev = device(path)
            vhost = dev.get("vhost_dev") or VhostDev()
            dev["vhost_dev"] = vhost.evolve(vqs=vhost.vqs | {queue: VhostVirtqueue(
                kick=r.get("kick", 0), call=r.get("call", 0), desc=r.get("desc", 0),
                avail=r.get("avail", 0), used=r.get("used", 0), num=r.get("num", 0),
                desc_phys=r.get("desc-phys", 0), desc_size=r.get("desc-size", 0),
                avail_phys=r.get("avail-phys", 0), avail_size=r.get("avail-size", 0),
                used_phys=r.get("used-phys", 0), used_size=r.get("used-size", 0))})

    _queues_from_vhost_replies(devices, profile)

    # Element queries after a queue's last status reply left shadow_avail_idx == avail.idx.
    for x in sorted(knowledge.all("x-query-virtio-queue-element"), key=_order_key):
        path, queue = x.arguments.get("path"), x.arguments.get("queue")
        r = _ok(x)
        if not (isinstance(r, dict) and isinstance(path, str) and path in devices):
            continue
        q = devices[path]["queues"].get(queue)
        if q is None or (q.as_of is not None and (_when(x) or float("-inf")) < q.as_of):
            continue
        avail = r.get("avail")
        if isinstance(avail, dict) and isinstance(avail.get("idx"), int):
            devices[path]["queues"][queue] = q.evolve(marks={"shadow_avail_idx": "log"},
                                                      shadow_avail_idx=avail["idx"])

    # A device unplugged after its last reply is gone from virtio_list (virtio_device_unrealize).
    # DEVICE_DELETED names the proxy and, separately, the backend (qapi/qdev.json).
    for ev in knowledge.monitor.events:
        if ev.name != "DEVICE_DELETED" or not isinstance(ev.data, dict):
            continue
        gone = ev.data.get("path")
        for path in list(devices):
            if gone in (path, path.removesuffix("/virtio-backend")):
                last = devices[path].get("as_of")
                ev_t = ev.t if ev.t is not None else ev.t_log
                if last is None or ev_t is None or ev_t >= last:
                    del devices[path]

    return QemuVirtioState(devices=[VirtIODeviceState(**d) for d in devices.values()],
                           qemu_version=knowledge.qemu_version, package=knowledge.qemu_package,
                           source="log")

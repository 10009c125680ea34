"""``VirtioDeviceFeatures``, ``VirtioDeviceStatus`` and ``VhostDeviceProtocols`` values, both ways.

QEMU 7.2 ``hw/virtio/virtio.c:qmp_decode_features`` decodes the transport bits first, then the
device's own map chosen by device id (``dev-features`` always present, ``unknown-dev-features``
only when bits are left); ``qmp_decode_status`` and ``qmp_decode_protocols`` work the same way
with mask values and the vhost-user protocol map. Reading a logged reply back into bits is the
inverse, so a log's replies become the C values vdecode reasons with. The bit logic is
:mod:`vdecode.virtio.bits`; this module adds the QMP member names.
"""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.error_replies import qemu_would_abort
from vdecode.virtio import bits


def _device_rows(profile: Profile, device_id: int) -> list[dict[str, Any]]:
    rows = bits.device_rows(profile.table("features"), device_id)
    if rows is None:
        # QEMU 7.2 qmp_decode_features: "default: g_assert_not_reached()"
        raise qemu_would_abort(f"qmp_decode_features has no case for device id {device_id} "
                               f"(g_assert_not_reached)")
    return rows


_U64 = (1 << 64) - 1


def features_to_reply(profile: Profile, device_id: int, bitmap: int) -> dict[str, Any]:
    """The ``VirtioDeviceFeatures`` value for a 64-bit feature word.

    :raises QmpError: when QEMU would abort (device id without a case).
    """
    d = bits.decode_features(bitmap, profile.table("features")["transport"],
                             _device_rows(profile, device_id))
    out: dict[str, Any] = {"transports": list(d.transports), "dev-features": list(d.dev_features)}
    if d.unknown:
        # QEMU 10.2+ decodes a 128-bit word but prints only its low half as unknown-dev-features
        # (qmp_decode_features sets has_unknown_dev_features, never has_unknown_dev_features2)
        out["unknown-dev-features"] = d.unknown & _U64
    return out


def status_to_reply(profile: Profile, status: int) -> dict[str, Any]:
    """The ``VirtioDeviceStatus`` value for ``vdev->status``."""
    names, left = bits.decode_status(status, profile.table("features")["status"])
    out: dict[str, Any] = {"statuses": names}
    if left:
        out["unknown-statuses"] = left
    return out


def protocols_to_reply(profile: Profile, protocols: int) -> dict[str, Any]:
    """The ``VhostDeviceProtocols`` value for ``hdev->protocol_features``."""
    names, left = bits.decode_protocols(protocols, profile.table("features")["vhost_user_protocol"])
    out: dict[str, Any] = {"protocols": names}
    if left:
        out["unknown-protocols"] = left
    return out


def features_from_reply(profile: Profile, device_id: int, value: dict[str, Any]) -> int:
    """The feature word a logged ``VirtioDeviceFeatures`` value was decoded from.

    :raises UnsupportedInput: for a string this QEMU version's tables do not hold.
    """
    table = profile.table("features")
    rows = bits.device_rows(table, device_id) or []
    skip = profile.unplaced            # strings of this build whose bit no evidence placed
    decoded = bits.DecodedFeatures(tuple(s for s in value.get("transports", []) if s not in skip),
                                   tuple(s for s in value.get("dev-features", []) if s not in skip),
                                   int(value.get("unknown-dev-features", 0)))
    return bits.encode_features(decoded, table["transport"], rows)


def status_from_reply(profile: Profile, value: dict[str, Any]) -> int:
    skip = profile.unplaced
    return bits.encode_bits([s for s in value.get("statuses", []) if s not in skip],
                            profile.table("features")["status"],
                            int(value.get("unknown-statuses", 0)), is_status=True)


def protocols_from_reply(profile: Profile, value: dict[str, Any]) -> int:
    skip = profile.unplaced
    return bits.encode_bits([s for s in value.get("protocols", []) if s not in skip],
                            profile.table("features")["vhost_user_protocol"],
                            int(value.get("unknown-protocols", 0)))

"""
Feature, status and flag bitmaps as QEMU 7.2 names them
-------------------------------------------------------
Pure functions over the table rows of a profile (``formats/qemu-*/features.json``: rows
``{"bit": n, "desc": s}``, status rows ``{"mask": m, "desc": s}``, descriptor-flag rows
``{"mask": m, "name": s}``), reproducing QEMU v7.2.0 ``hw/virtio/virtio.c``:

* ``CONVERT_FEATURES(type, map, is_status, bitmap)``: walks the map in table order, *prepends* the
  string of every set bit (so the list comes out in reverse table order) and clears the bit in the
  caller's ``bitmap`` (``bitmap ^= bit``), so a later table never sees it;
* ``qmp_decode_features()``: transport map first, then the device map (none for ids that
  ``break``), whatever is left is ``unknown-dev-features``;
* ``qmp_decode_status()``/``qmp_decode_protocols()``: one map, the rest is unknown;
* ``qmp_decode_vring_desc_flags()``: prepends too, but does not consume bits and has no "unknown".

The ``encode_*`` functions invert these: the strings (plus the unknown rest) give the bitmap back.
No QMP member names here; ``reconstruct/`` builds replies from these values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vdecode.errors import UnsupportedInput
from vdecode.frozen import record

__all__ = ("DecodedFeatures", "convert_features", "decode_features", "decode_status",
           "decode_protocols", "decode_desc_flags", "encode_bits", "encode_features",
           "device_rows", "FEATURE_TABLE")

Row = dict[str, Any]
FEATURE_TABLE = "formats/features.json"


def _row_mask(row: Row, is_status: bool) -> int:
    return row["mask"] if is_status else 1 << row["bit"]


def convert_features(bitmap: int, rows: Sequence[Row], *, is_status: bool = False) -> tuple[list[str], int]:
    """``CONVERT_FEATURES``: the strings of the set bits, and the bitmap with those bits cleared.

    :param bitmap: ``uint64_t`` (features, protocols) or ``uint8_t`` (status) value.
    :param rows: one QEMU map in table order.
    :param is_status: rows hold masks (``virtio_config_status_map``), not bit numbers.
    :return: ``(strings in QEMU's output order = reverse table order, remaining bits)``.

    >>> rows = [{"bit": 0, "desc": "A"}, {"bit": 3, "desc": "B"}]
    >>> convert_features(0b1011, rows)
    (['B', 'A'], 2)
    """
    out: list[str] = []
    for row in rows:
        bit = _row_mask(row, is_status)
        if bitmap & bit:
            out.insert(0, row["desc"])      # node->next = list; list = node
            bitmap ^= bit
    return out, bitmap


@record
class DecodedFeatures:
    """``VirtioDeviceFeatures`` as plain values: ``unknown`` is 0 when QEMU omits the member."""

    transports: tuple[str, ...]
    dev_features: tuple[str, ...]
    unknown: int


def device_rows(features: dict, device_id: int) -> list[Row] | None:
    """The device map ``qmp_decode_features()`` uses for ``device_id``.

    :return: the rows (``[]`` for ids that ``break`` with no table), or ``None`` for ids that hit
        ``g_assert_not_reached()``: QEMU 7.2 aborts instead of answering.
    """
    entry = features["devices"].get(str(device_id))
    return None if entry is None else entry["rows"]


def decode_features(bitmap: int, transport: Sequence[Row], device: Sequence[Row]) -> DecodedFeatures:
    """``qmp_decode_features``: transport bits first, then the device map, the rest unknown.

    >>> t = [{"bit": 32, "desc": "V1"}]
    >>> d = [{"bit": 32, "desc": "never"}, {"bit": 0, "desc": "D0"}]
    >>> decode_features((1 << 32) | 1 | 4, t, d)
    DecodedFeatures(transports=('V1',), dev_features=('D0',), unknown=4)
    """
    transports, rest = convert_features(bitmap, transport)
    dev, rest = convert_features(rest, device)
    return DecodedFeatures(tuple(transports), tuple(dev), rest)


def decode_status(status: int, rows: Sequence[Row]) -> tuple[list[str], int]:
    """``qmp_decode_status``: the status strings and the undecoded rest (``unknown-statuses``)."""
    return convert_features(status, rows, is_status=True)


def decode_protocols(bitmap: int, rows: Sequence[Row]) -> tuple[list[str], int]:
    """``qmp_decode_protocols``: vhost-user protocol strings and the rest (``unknown-protocols``)."""
    return convert_features(bitmap, rows)


def decode_desc_flags(flags: int, rows: Sequence[Row]) -> list[str]:
    """``qmp_decode_vring_desc_flags``: names of the set flags, reverse table order, unknown dropped.

    >>> rows = [{"mask": 1, "name": "next"}, {"mask": 2, "name": "write"}]
    >>> decode_desc_flags(3, rows)
    ['write', 'next']
    """
    return [row["name"] for row in reversed(rows) if flags & row["mask"]]


def encode_bits(strings: Iterable[str], rows: Sequence[Row], unknown: int = 0, *,
                is_status: bool = False, source: str = FEATURE_TABLE) -> int:
    """The bitmap whose :func:`convert_features` gives ``strings`` and leaves ``unknown``.

    :param strings: decoded strings, in any order.
    :param unknown: the bits QEMU reported as unknown (kept as they are).
    :raises UnsupportedInput: a string that is not in ``rows`` (another QEMU version's table).

    >>> rows = [{"bit": 0, "desc": "A"}, {"bit": 3, "desc": "B"}]
    >>> encode_bits(["B", "A"], rows, unknown=2)
    11
    """
    by_desc = {row.get("desc", row.get("name")): _row_mask(row, is_status) for row in rows}
    bitmap = unknown
    for s in strings:
        if s not in by_desc:
            raise UnsupportedInput(source, f"no bit for {s!r} in this QEMU version's table")
        bitmap |= by_desc[s]
    return bitmap


def encode_features(decoded: DecodedFeatures, transport: Sequence[Row], device: Sequence[Row], *,
                    source: str = FEATURE_TABLE) -> int:
    """Inverse of :func:`decode_features`: ``encode_features(decode_features(x, t, d), t, d) == x``."""
    return (encode_bits(decoded.transports, transport, source=source)
            | encode_bits(decoded.dev_features, device, source=source) | decoded.unknown)

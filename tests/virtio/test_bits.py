"""bits: QEMU's CONVERT_FEATURES decoding by table, and its inverse (unknown bits kept)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdecode.errors import UnsupportedInput
from vdecode.profiles import load_profile
from vdecode.virtio.bits import (DecodedFeatures, decode_desc_flags, decode_features, decode_protocols,
                                 decode_status, device_rows, encode_bits, encode_features)

FEATURES = load_profile("7.2").table("features")
TABLED = sorted(int(k) for k in FEATURES["devices"])


@given(bitmap=st.integers(0, 2**64 - 1), device_id=st.sampled_from(TABLED))
def test_decode_then_encode_gives_the_bits_back(bitmap, device_id):
    transport, device = FEATURES["transport"], device_rows(FEATURES, device_id)
    decoded = decode_features(bitmap, transport, device)
    assert encode_features(decoded, transport, device) == bitmap
    assert decode_features(encode_features(decoded, transport, device), transport, device) == decoded


@given(status=st.integers(0, 255), protocols=st.integers(0, 2**64 - 1))
def test_status_and_protocols_round_trip(status, protocols):
    strings, unknown = decode_status(status, FEATURES["status"])
    assert encode_bits(strings, FEATURES["status"], unknown, is_status=True) == status
    assert unknown & ~0x30 == 0            # only 0x10 and 0x20 have no string in 7.2
    strings, unknown = decode_protocols(protocols, FEATURES["vhost_user_protocol"])
    assert encode_bits(strings, FEATURES["vhost_user_protocol"], unknown) == protocols


@given(flags=st.integers(0, 0xFFFF))
def test_desc_flags_round_trip_on_known_bits(flags):
    rows = FEATURES["vring_desc_flags"]
    known = sum(r["mask"] for r in rows)
    assert encode_bits(decode_desc_flags(flags, rows), rows, is_status=True) == flags & known


def test_output_order_is_reverse_table_order_and_transport_eats_bit_27():
    net = device_rows(FEATURES, 1)
    d = decode_features((1 << 32) | (1 << 27) | (1 << 5) | (1 << 0) | (1 << 40), FEATURES["transport"], net)
    assert d == DecodedFeatures(
        ("VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)",
         "VIRTIO_F_ANY_LAYOUT: Device accepts arbitrary desc. layouts"),
        ("VIRTIO_NET_F_MAC: Device has given MAC address",
         "VIRTIO_NET_F_CSUM: Device handling packets with partial checksum supported"),
        1 << 40)
    assert decode_desc_flags(7, FEATURES["vring_desc_flags"]) == ["indirect", "write", "next"]


def test_ids_without_table_and_abort_ids():
    assert device_rows(FEATURES, 9) == []           # virtio-9p: break, no table
    assert device_rows(FEATURES, 34) is None        # vhost-user-i2c: g_assert_not_reached
    d = decode_features((1 << 32) | 1, FEATURES["transport"], [])
    assert d.dev_features == () and d.unknown == 1


def test_unknown_string_is_unsupported_input():
    with pytest.raises(UnsupportedInput) as err:
        encode_bits(["VIRTIO_F_RING_RESET: Driver can reset a queue individually"], FEATURES["transport"])
    assert str(err.value) == ("formats/features.json: no bit for 'VIRTIO_F_RING_RESET: Driver can reset "
                              "a queue individually' in this QEMU version's table")


def test_every_status_reply_of_the_captures_round_trips(captures):
    """Strings QEMU printed -> bits -> the same lists, in QEMU's order."""
    seen = 0
    for cap in captures.values():
        for req, reply in cap.truth:
            ret = reply.get("return")
            if req["execute"] != "x-query-virtio-status" or not isinstance(ret, dict):
                continue
            device = device_rows(FEATURES, ret["device-id"])
            for key in ("guest-features", "host-features", "backend-features"):
                f = ret[key]
                got = DecodedFeatures(tuple(f["transports"]), tuple(f["dev-features"]),
                                      f.get("unknown-dev-features", 0))
                bitmap = encode_features(got, FEATURES["transport"], device)
                assert decode_features(bitmap, FEATURES["transport"], device) == got
            s = ret["status"]
            status = encode_bits(s["statuses"], FEATURES["status"], s.get("unknown-statuses", 0), is_status=True)
            assert decode_status(status, FEATURES["status"]) == (s["statuses"], s.get("unknown-statuses", 0))
            seen += 1
    assert seen

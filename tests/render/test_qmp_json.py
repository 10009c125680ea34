"""QEMU's JSON bytes: member order from the QDict hash, checked on every reply real QEMU gave."""

import json

from vdecode.profiles import load_profile
from vdecode.render.qmp_json import encode, encode_message, qdict_order, tdb_hash


def _schema_ordered(value, typ, structs):
    """Rebuild a reply value with dict insertion in QAPI schema order, as QEMU's visitor does."""
    if isinstance(typ, list):
        return [_schema_ordered(v, typ[0], structs) for v in value]
    if typ not in structs:
        return value
    out = {}
    for m in structs[typ]:
        if m["name"] in value:
            out[m["name"]] = _schema_ordered(value[m["name"]], m["type"], structs)
    assert set(out) == set(value), (typ, set(value) - set(out))
    return out


def test_every_real_reply_reencodes_to_qemus_bytes(captures):
    qapi = load_profile("7.2").table("qapi")
    structs, commands = qapi["structs"], qapi["commands"]
    n = 0
    for cap in captures.values():
        for req, reply in cap.truth:
            if "return" in reply:
                rebuilt = {"return": _schema_ordered(reply["return"],
                                                     commands[req["execute"]]["returns"], structs)}
            else:
                rebuilt = {"error": {"class": reply["error"]["class"],
                                     "desc": reply["error"]["desc"]}}
            assert encode(rebuilt) == json.dumps(reply), req
            n += 1
    assert n > 1000


def test_error_puts_id_first_and_lines_end_crlf():
    msg = {"error": {"class": "GenericError", "desc": "Invalid virtqueue number 9"}, "id": 5}
    assert encode_message(msg) == (b'{"id": 5, "error": {"class": "GenericError", '
                                   b'"desc": "Invalid virtqueue number 9"}}\r\n')


def test_tdb_hash_buckets_match_qemus_documented_orders():
    assert [tdb_hash(k) % 512 for k in ("return", "id", "error")] == [401, 486, 489]
    # two keys of one bucket (13): the later inserted prints first
    assert tdb_hash("bus-name") % 512 == tdb_hash("disable-legacy-check") % 512 == 13
    assert qdict_order(["disable-legacy-check", "bus-name"]) == ["bus-name",
                                                                 "disable-legacy-check"]


def test_strings_escape_like_json_writer():
    assert encode("a\"b\\c\n\x01\x7f\u00e9\U0001F600") == \
        '"a\\"b\\\\c\\n\\u0001\\u007F\\u00E9\\uD83D\\uDE00"'
    assert encode({}) == "{}" and encode([]) == "[]" and encode(True) == "true"

"""QAPI struct values in schema member order, from ``formats/qemu-<v>/qapi.json``.

QEMU's output visitor inserts members in schema order and skips absent optional members; the
printed order then follows from the keys (``render/qmp_json.py``). Building every reply through
:func:`shape` keeps the schema as data.
"""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile


def shape(profile: Profile, struct: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as the ``struct`` QEMU would build: schema order, optional ``None`` left out.

    :raises KeyError: when a mandatory member is missing (a vdecode bug, not an input problem).
    """
    out: dict[str, Any] = {}
    for member in profile.table("qapi")["structs"][struct]:
        name = member["name"]
        value = values.get(name)
        if value is None:
            if member.get("optional"):
                continue
            raise KeyError(f"{struct}.{name} has no value")
        out[name] = value
    return out

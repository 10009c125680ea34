#!/usr/bin/env python3
"""Generate ``formats/qemu-7.2/{features,devices,qapi,errors}.json`` from QEMU 7.2's source text.

Reads only the verbatim excerpts in ``tools/qemu-7.2-src/`` (see its README.md for where each was
read), so the output is reproducible offline:

* ``virtio.c.excerpt``: QEMU v7.2.0 ``hw/virtio/virtio.c``: ``virtio_transport_map``, the per-device
  maps, ``virtio_config_status_map``, ``vhost_user_protocol_map``, ``virtio_device_names``, the
  ``qmp_decode_features()`` switch, ``qmp_decode_vring_desc_flags()``'s map and the error strings
  of the five ``qmp_x_query_virtio*`` functions;
* ``standard-headers.h.excerpt``: the ``#define`` values those tables use;
* ``config-devices-x86_64.h``: which ``#ifdef CONFIG_*`` branches Debian's x86_64 build compiles;
* ``debian-spelling.diff``: Debian's distro patch, applied to the C text before parsing;
* ``qapi-virtio.json``: the QAPI schema (member lists in schema order);
* ``qmp-core.c.excerpt``: the QMP core's error texts.

Usage: ``python tools/gen_formats.py [--check]`` (``--check`` exits 1 if a file would change).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tools" / "qemu-7.2-src"
OUT = ROOT / "formats" / "qemu-7.2"
QEMU = "7.2.0"
GENERATED_BY = "tools/gen_formats.py"
VIRTIO_C = "qemu.git v7.2.0 hw/virtio/virtio.c"
PATCH_NOTE = ("with Debian's debian/patches/spelling.diff applied (Debian bookworm 1:7.2+dfsg-7 prints "
              "'...buffers supported', upstream 7.2.0 '...buffers suppoted')")


class SourceError(Exception):
    """The excerpt text does not have the shape the generator expects."""


# --- C text helpers ------------------------------------------------------------------------------

def read_defines(text: str) -> dict[str, int]:
    """``#define NAME VALUE`` lines; a VALUE naming an earlier define is resolved."""
    out: dict[str, int] = {}
    for name, value in re.findall(r"^#define\s+(\w+)\s+(\S+)", text, re.M):
        out[name] = out[value] if value in out else int(value, 0)
    return out


def preprocess(text: str, defined: set[str]) -> str:
    """Keep the lines of ``#ifdef``/``#ifndef`` ... ``#endif`` branches that ``defined`` selects."""
    keep_stack: list[bool] = []
    lines = []
    for line in text.splitlines():
        m = re.match(r"\s*#\s*(ifdef|ifndef)\s+(\w+)", line)
        if m:
            on = (m.group(2) in defined) == (m.group(1) == "ifdef")
            keep_stack.append(on)
            continue
        if re.match(r"\s*#\s*endif", line):
            if not keep_stack:
                raise SourceError("#endif without #if")
            keep_stack.pop()
            continue
        if re.match(r"\s*#\s*(if|else|elif)\b", line):
            raise SourceError(f"unsupported preprocessor line: {line.strip()}")
        if all(keep_stack):
            lines.append(line)
    if keep_stack:
        raise SourceError("unterminated #if")
    return "\n".join(lines)


def c_strings(text: str) -> str:
    """Concatenate adjacent C string literals (``"a " "b"`` -> ``a b``)."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    return "".join(bytes(p, "ascii").decode("unicode_escape") for p in parts)


def apply_patch(text: str, diff: str) -> str:
    """Apply a one-hunk-per-change unified diff by replacing each ``-`` line run with its ``+`` run."""
    minus: list[str] = []
    plus: list[str] = []
    changes = []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            minus.append(line[1:])
        elif line.startswith("+"):
            plus.append(line[1:])
        elif minus or plus:
            changes.append(("\n".join(minus), "\n".join(plus)))
            minus, plus = [], []
    if minus or plus:
        changes.append(("\n".join(minus), "\n".join(plus)))
    for old, new in changes:
        if text.count(old) != 1:
            raise SourceError(f"patch line not found exactly once: {old!r}")
        text = text.replace(old, new)
    return text


def function_body(text: str, name: str) -> str:
    """A function definition: from its ``type name(`` line to the next line that is a lone ``}``."""
    m = re.search(rf"^[A-Za-z][\w ]*\*?\s*{name}\(.*?\n\}}\n", text, re.S | re.M)
    if not m:
        raise SourceError(f"function {name} not found")
    return m.group(0)


# --- tables --------------------------------------------------------------------------------------

def feature_maps(code: str, consts: dict[str, int]) -> dict[str, list[dict]]:
    """Every ``qmp_virtio_feature_map_t name[] = {...}``: rows ``{"bit"|"mask", "desc"}`` in order."""
    maps = {}
    for name, body in re.findall(r"qmp_virtio_feature_map_t\s+(\w+)\[\]\s*=\s*\{(.*?)\n\};", code, re.S):
        rows = []
        for macro, strs in re.findall(r"FEATURE_ENTRY\((\w+),\s*\\?\s*((?:\"(?:[^\"\\]|\\.)*\"\s*)+)\)", body):
            if macro not in consts:
                raise SourceError(f"{name}: no value for {macro}")
            rows.append({"bit": consts[macro], "desc": c_strings(strs), "macro": macro})
        if not re.search(r"\{\s*-1,\s*\"\"\s*\}", body):
            raise SourceError(f"{name}: no {{ -1, \"\" }} terminator")
        maps[name] = rows
    return maps


def decode_switch(code: str, consts: dict[str, int]) -> tuple[dict[int, str | None], str]:
    """``qmp_decode_features()``'s switch: device id -> map name (None: ``break`` with no table)."""
    body = function_body(code, "qmp_decode_features")
    switch = body[body.index("switch (device_id)"):]
    out: dict[int, str | None] = {}
    pending: list[int] = []
    mapname: str | None = None
    default = ""
    lines = iter(switch.splitlines())
    for line in lines:
        if m := re.match(r"\s*case (VIRTIO_ID_\w+):", line):
            pending.append(consts[m.group(1)])
        elif m := re.search(r"CONVERT_FEATURES\(strList,\s*(\w+),", line):
            mapname = m.group(1)
        elif re.match(r"\s*break;", line):
            for dev in pending:
                if dev in out:
                    raise SourceError(f"device id {dev} twice in the switch")
                out[dev] = mapname
            pending, mapname = [], None
        elif re.match(r"\s*default:", line):
            default = next(lines).strip()
            break
    if default != "g_assert_not_reached();":
        raise SourceError(f"unexpected default branch: {default!r}")
    return out, default


def vring_desc_flags(code: str, consts: dict[str, int]) -> list[dict]:
    body = function_body(code, "qmp_decode_vring_desc_flags")
    rows = []
    for expr, name in re.findall(r"\{\s*((?:1 << )?\w+),\s*\"(\w+)\"\s*\}", body):
        mask = 1 << consts[expr[5:]] if expr.startswith("1 << ") else consts[expr]
        rows.append({"mask": mask, "name": name})
    return rows


def device_names(code: str, consts: dict[str, int]) -> dict[str, str]:
    m = re.search(r"virtio_device_names\[\]\s*=\s*\{(.*?)\};", code, re.S)
    if not m:
        raise SourceError("virtio_device_names not found")
    pairs = re.findall(r"\[(VIRTIO_ID_\w+)\]\s*=\s*\"([^\"]+)\"", m.group(1))
    return {str(consts[k]): v for k, v in sorted(pairs, key=lambda kv: consts[kv[0]])}


def endian_names(code: str, consts: dict[str, int]) -> dict[str, str]:
    body = function_body(code, "qmp_x_query_virtio_status")
    out = {}
    for case, name in re.findall(r"case (VIRTIO_DEVICE_ENDIAN_\w+):\s*status->device_endian = g_strdup\(\"(\w+)\"\)", body):
        out[consts[case]] = name
    m = re.search(r"default:\s*status->device_endian = g_strdup\(\"(\w+)\"\)", body)
    if not m:
        raise SourceError("device_endian default not found")
    out[consts["VIRTIO_DEVICE_ENDIAN_UNKNOWN"]] = m.group(1)
    return {str(k): out[k] for k in sorted(out)}


def command_errors(code: str) -> dict[str, list[str]]:
    """The ``error_setg`` format strings of each ``qmp_x_query_virtio*`` function, in source order."""
    out = {}
    for fn in ("qmp_x_query_virtio_status", "qmp_x_query_virtio_vhost_queue_status",
               "qmp_x_query_virtio_queue_status", "qmp_x_query_virtio_queue_element"):
        body = function_body(code, fn)
        out[fn] = [c_strings(s) for s in re.findall(r"error_setg\(errp,\s*(\"(?:[^\"\\]|\\.)*\")", body)]
    return out


# --- QAPI ----------------------------------------------------------------------------------------

def qapi_exprs(text: str) -> list[dict]:
    """Top-level expressions of a QAPI schema file (comments dropped, order kept)."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    exprs, depth, start = [], 0, None
    for i, ch in enumerate(code):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                exprs.append(ast.literal_eval(code[start:i + 1]))
    return exprs


def qapi_tables(text: str) -> dict:
    structs, commands = {}, {}
    for e in qapi_exprs(text):
        if "struct" in e:
            structs[e["struct"]] = [
                {"name": k.lstrip("*"), "optional": k.startswith("*"), "type": v}
                for k, v in e["data"].items()
            ]
        elif "command" in e:
            commands[e["command"]] = {
                "args": [{"name": k.lstrip("*"), "optional": k.startswith("*"), "type": v}
                         for k, v in e.get("data", {}).items()],
                "returns": e.get("returns"),
                "features": e.get("features", []),
            }
    return {"structs": structs, "commands": commands}


# --- output --------------------------------------------------------------------------------------

def dumps(obj, indent: int = 0) -> str:
    """JSON with one table row per line: dicts and lists nest, rows (dicts in lists) stay compact."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if not obj:
            return "[]"
        if all(not isinstance(x, (dict, list)) for x in obj):
            return json.dumps(obj, ensure_ascii=False)
        rows = [inner + json.dumps(x, ensure_ascii=False) for x in obj]
        return "[\n" + ",\n".join(rows) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def build() -> dict[str, dict]:
    consts = read_defines((SRC / "standard-headers.h.excerpt").read_text())
    config = set(read_defines((SRC / "config-devices-x86_64.h").read_text()))
    raw = (SRC / "virtio.c.excerpt").read_text()
    enum = re.search(r"enum VhostUserProtocolFeature \{(.*?)\};", raw, re.S)
    if not enum:
        raise SourceError("enum VhostUserProtocolFeature not found")
    consts.update({k: int(v) for k, v in re.findall(r"(\w+) = (\d+)", enum.group(1))})
    consts.update(read_defines(raw))            # VIRTIO_PCI_VRING_ALIGN
    code = preprocess(apply_patch(raw, (SRC / "debian-spelling.diff").read_text()), config)

    maps = feature_maps(code, consts)
    switch, _default = decode_switch(code, consts)

    def rows(name: str, key: str = "bit") -> list[dict]:
        return [{key: r["bit"], "desc": r["desc"]} for r in maps[name]]

    features = {
        "qemu": QEMU,
        "source": (f"{VIRTIO_C}: virtio_transport_map[], the per-device maps, virtio_config_status_map[], "
                   "vhost_user_protocol_map[], qmp_decode_features() switch (x86_64 build: CONFIG_ACPI set, "
                   "CONFIG_VIRTIO_I2C_ADAPTER unset), qmp_decode_vring_desc_flags() map; rows in table order; "
                   f"{PATCH_NOTE}"),
        "generated_by": GENERATED_BY,
        "transport": rows("virtio_transport_map"),
        "devices": {
            str(dev): ({"map": name, "rows": rows(name)} if name else {"map": None, "rows": []})
            for dev, name in switch.items()
        },
        "status": rows("virtio_config_status_map", "mask"),
        "vhost_user_protocol": rows("vhost_user_protocol_map"),
        "vring_desc_flags": vring_desc_flags(code, consts),
    }

    devices = {
        "qemu": QEMU,
        "source": (f"{VIRTIO_C}: virtio_device_names[] (by VIRTIO_ID_*), qmp_x_query_virtio_status() "
                   "device_endian switch, VIRTIO_PCI_VRING_ALIGN; include/hw/virtio/virtio.h VIRTIO_QUEUE_MAX"),
        "generated_by": GENERATED_BY,
        "names": device_names(code, consts),
        "endian": endian_names(code, consts),
        "queue_max": consts["VIRTIO_QUEUE_MAX"],
        "vring_align_default": consts["VIRTIO_PCI_VRING_ALIGN"],
    }

    q = qapi_tables((SRC / "qapi-virtio.json").read_text())
    qapi = {
        "qemu": QEMU,
        "source": "qemu.git v7.2.0 qapi/virtio.json (members and arguments in schema order)",
        "generated_by": GENERATED_BY,
        "structs": q["structs"],
        "commands": q["commands"],
        "envelope": {"return": "return", "id": "id", "error": "error", "class": "class", "desc": "desc"},
    }

    errs = command_errors(code)
    st, vq, qs, el = (errs[f] for f in ("qmp_x_query_virtio_status", "qmp_x_query_virtio_vhost_queue_status",
                                        "qmp_x_query_virtio_queue_status", "qmp_x_query_virtio_queue_element"))
    if len(st) != 1 or len(vq) != 3 or len(qs) != 2 or len(el) != 6:
        raise SourceError(f"unexpected error_setg counts: {[len(x) for x in (st, vq, qs, el)]}")
    desc_next = re.search(r"virtio_error\(vdev,\s*(\"[^\"]*\"),\s*\*next\)", code)
    if not desc_next:
        raise SourceError("virtqueue_split_read_next_desc's virtio_error not found")
    core = {}
    for key, text in re.findall(r"^(\w+): \S+(?: \w+)?: (.*?) \[[^\]]*\]$", (SRC / "qmp-core.c.excerpt").read_text(), re.M):
        core[key] = text
    per_command = {
        "x-query-virtio-status": {"device_not_found": st[0]},
        "x-query-virtio-vhost-queue-status": {"device_not_found": vq[0], "vhost_not_started": vq[1],
                                              "vhost_invalid_queue": vq[2]},
        "x-query-virtio-queue-status": {"device_not_found": qs[0], "invalid_queue": qs[1]},
        "x-query-virtio-queue-element": {"device_not_found": el[0], "invalid_queue": el[1], "packed": el[2],
                                         "region_caches": el[3], "cannot_map_desc": el[4],
                                         "cannot_map_indirect": el[5]},
    }
    errors = {
        "qemu": QEMU,
        "source": (f"{VIRTIO_C}: error_setg() strings of qmp_x_query_virtio_status, "
                   "qmp_x_query_virtio_vhost_queue_status, qmp_x_query_virtio_queue_status, "
                   "qmp_x_query_virtio_queue_element; virtqueue_split_read_next_desc() virtio_error (stderr "
                   "only, not a reply); QMP core texts from qapi/qobject-input-visitor.c, qapi/qapi-visit-core.c, "
                   "qapi/qmp-dispatch.c, monitor/qmp.c, monitor/qmp-cmds-control.c, qobject/json-parser.c. "
                   "printf-style placeholders kept"),
        "generated_by": GENERATED_BY,
        "device_not_found": st[0],
        "device_not_found_queue_element": el[0],
        "invalid_queue": qs[1],
        "vhost_not_started": vq[1],
        "vhost_invalid_queue": vq[2],
        "packed": el[2],
        "region_caches": el[3],
        "cannot_map_desc": el[4],
        "cannot_map_indirect": el[5],
        "desc_next": c_strings(desc_next.group(1)),
        **core,
        "commands": per_command,
        "classes": {"default": "GenericError", "command_not_found": "CommandNotFound",
                    "caps_expected": "CommandNotFound", "caps_done": "CommandNotFound"},
    }
    return {"features": features, "devices": devices, "qapi": qapi, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated file differs")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, obj in build().items():
        path = OUT / f"{name}.json"
        text = dumps(obj) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    for p in stale:
        print(f"stale: {p}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

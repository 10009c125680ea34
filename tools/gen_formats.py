#!/usr/bin/env python3
"""Generate ``formats/qemu-<version>/{features,devices,qapi,errors,qmp_core}.json`` from a QEMU source tree.

Reads the tree named by ``--qemu-src`` (``apt-get source qemu`` with debian/patches applied, or a git
checkout) and writes facts only: names, bits, strings, member lists. What it reads:

* the QMP file (``hw/virtio/virtio.c`` up to 7.2, ``hw/virtio/virtio-qmp.c`` from 8.0):
  ``virtio_transport_map``, the per-device maps, ``virtio_config_status_map``,
  ``vhost_user_protocol_map``, the ``qmp_decode_features()`` switch, the ``device_endian`` switch,
  the error strings of the ``qmp_x_query_virtio*`` functions, how ``x-query-virtio`` finds devices;
* ``hw/virtio/virtio.c``: ``virtio_device_names[]``, ``qmp_decode_vring_desc_flags()``,
  ``virtqueue_split_read_next_desc()``'s ``virtio_error``, ``VIRTIO_PCI_VRING_ALIGN``;
* the constants: ``include/standard-headers/linux/{virtio_*,vhost_types}.h``,
  ``include/hw/virtio/{virtio,vhost-user}.h``;
* ``qapi/virtio.json``, ``qapi/control.json``, ``qapi/error.json``;
* the QMP core's error texts: ``qapi/qobject-input-visitor.c``, ``qapi/qapi-visit-core.c``,
  ``qapi/qmp-dispatch.c``, ``monitor/qmp.c``, ``monitor/qmp-cmds-control.c``, ``qobject/json-parser.c``,
  ``hw/virtio/virtio-stub.c`` (``QERR_*`` macros from ``include/qapi/qmp/qerror.h``).

Which ``#ifdef CONFIG_*`` branches are compiled comes from ``X86_64_CONFIG`` below (Debian's
qemu-system-x86_64 build), or from a build's ``x86_64-softmmu-config-devices.h`` (``--config-devices``).

Usage::

    python tools/gen_formats.py --qemu-src /path/to/qemu-7.2+dfsg            # writes formats/qemu-7.2/
    python tools/gen_formats.py --qemu-src DIR --check                        # exit 1 if a file differs
    python tools/gen_formats.py --qemu-src DIR --binary /usr/bin/qemu-system-x86_64   # also check strings
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qemu_source import (SourceError, Tree, c_strings, camel_to_upper, find_calls,  # noqa: E402
                         function_body, is_string_literal, parse_qapi, preprocess, read_constants,
                         tested_symbols)

ROOT = Path(__file__).resolve().parent.parent
GENERATED_BY = "tools/gen_formats.py"

# The CONFIG_* symbols the QMP tables test, as Debian's qemu-system-x86_64 build has them. QEMU
# generates them per target from Kconfig (build/x86_64-softmmu-config-devices.h); True = defined.
# Each True symbol must be a Kconfig symbol of the tree, each False one must not be (checked).
X86_64_CONFIG = {
    "CONFIG_ACPI": True,               # PC -> PC_ACPI -> ACPI_X86 -> ACPI (hw/i386/Kconfig)
    "CONFIG_VIRTIO_SERIAL": True,      # the virtio devices below: 'default y, depends on VIRTIO'
    "CONFIG_VIRTIO_BLK": True,
    "CONFIG_VIRTIO_GPU": True,
    "CONFIG_VIRTIO_NET": True,
    "CONFIG_VIRTIO_SCSI": True,
    "CONFIG_VIRTIO_BALLOON": True,
    "CONFIG_VIRTIO_IOMMU": True,
    "CONFIG_VIRTIO_INPUT": True,
    "CONFIG_VHOST_USER_FS": True,      # Debian builds vhost-user (--enable-vhost-user)
    "CONFIG_VHOST_VSOCK": True,
    "CONFIG_VIRTIO_CRYPTO": True,
    "CONFIG_VIRTIO_MEM": True,         # x86_64 selects VIRTIO_MEM_SUPPORTED
    "CONFIG_VIRTIO_RNG": True,
    "CONFIG_VHOST_USER_GPIO": True,    # 8.2+ 'default y, depends on VIRTIO && VHOST_USER'
    "CONFIG_VIRTIO_I2C_ADAPTER": False,  # not a Kconfig symbol (only VHOST_USER_I2C is): never defined
}

# Debian builds whose every table string was found in the binary (re-checked by --binary, which
# also compares the build-id): tree upstream version -> (what, build-id).
BINARY_CHECKED = {
    "7.2.0": ("Debian 1:7.2+dfsg-7+deb12u18+b3 (bookworm) /usr/bin/qemu-system-x86_64",
              "d9541fd67c4ea37f9ca7fca0f5096f32b3b7e7e0"),
    "10.0.2": ("Debian 1:10.0.2+ds-2+deb13u1~bpo12+1 (bookworm-backports) /usr/bin/qemu-system-x86_64",
               "0fbbd5ca8d2d0a32532049e20739f3e0d521c5ed"),
}

# The QMP core's error texts: key -> (file, function, n-th error call in it). A '%s' filled by a string
# literal argument is replaced by it; BIND names a variable that another function passes as a literal.
CORE_ERRORS = (
    ("missing", "qapi/qobject-input-visitor.c", "qobject_input_get_object", 0),
    ("not_string", "qapi/qobject-input-visitor.c", "qobject_input_type_str", 0),
    ("expects_uint64", "qapi/qobject-input-visitor.c", "qobject_input_type_uint64", 0),
    ("expects_uint16", "qapi/qapi-visit-core.c", "visit_type_uintN", 0),
    ("unexpected", "qapi/qobject-input-visitor.c", "qobject_input_check_struct", 0),
    ("virtio_disabled", "hw/virtio/virtio-stub.c", "qmp_virtio_unsupported", 0),
    ("command_not_found", "qapi/qmp-dispatch.c", "qmp_dispatch", 1),
    ("caps_expected", "monitor/qmp.c", "monitor_qmp_dispatch", 0),
    ("caps_done", "monitor/qmp-cmds-control.c", "qmp_qmp_capabilities", 0),
    ("not_object", "qapi/qmp-dispatch.c", "qmp_dispatch", 0),
    ("member_not_string", "qapi/qmp-dispatch.c", "qmp_dispatch_check_obj", 0),
    ("member_clash", "qapi/qmp-dispatch.c", "qmp_dispatch_check_obj", 1),
    ("arguments_not_object", "qapi/qmp-dispatch.c", "qmp_dispatch_check_obj", 2),
    ("member_unexpected", "qapi/qmp-dispatch.c", "qmp_dispatch_check_obj", 3),
    ("lacks_execute", "qapi/qmp-dispatch.c", "qmp_dispatch_check_obj", 4),
    ("json_parse", "qobject/json-parser.c", "parse_error", 0),
)
QMP_CORE_ERRORS = (
    ("not_array", "qapi/qobject-input-visitor.c", "qobject_input_start_list", 0),
    ("bad_enum", "qapi/qapi-visit-core.c", "input_type_enum", 0),
)
BIND = {("visit_type_uintN", "type"): ("qapi/qapi-visit-core.c", "visit_type_uint16", "visit_type_uintN", 4)}
QMP_CORE_COMMANDS = ("qmp_capabilities", "query-version", "query-commands")   # what vdecode's monitor answers
VIRTIO_COMMANDS = ("qmp_x_query_virtio", "qmp_x_query_virtio_status", "qmp_x_query_virtio_vhost_queue_status",
                   "qmp_x_query_virtio_queue_status", "qmp_x_query_virtio_queue_element")
ERROR_CALLS = ("error_setg", "error_set", "qdict_put_str")


# --- the tree's files ------------------------------------------------------------------------------

class Sources:
    """The files of one tree this generator reads, and the literals it took from them."""

    def __init__(self, tree: Tree, config_devices: Path | None) -> None:
        self.tree = tree
        self.qmp_rel = next(r for r in ("hw/virtio/virtio-qmp.c", "hw/virtio/virtio.c") if tree.has(r)
                            and "qmp_decode_features(" in tree.text(r))
        self.virtio_rel = "hw/virtio/virtio.c"
        self.literals: set[str] = set()
        raw = {rel: tree.text(rel) for rel in dict.fromkeys((self.qmp_rel, self.virtio_rel))}
        self.config, self.config_note = self._config(raw[self.qmp_rel], config_devices)
        self.code = {rel: preprocess(text, self.config) for rel, text in raw.items()}
        self.consts = read_constants([raw.get(r) or tree.text(r) for r in self._headers(list(raw))])

    def _headers(self, files: list[str]) -> list[str]:
        """``files`` and, depth first, the ``hw/virtio/`` and ``standard-headers/`` headers they include."""
        seen: list[str] = []
        todo = list(files)
        while todo:
            rel = todo.pop(0)
            if rel in seen or not self.tree.has(rel):
                continue
            seen.append(rel)
            for inc in re.findall(r'^#\s*include\s+"((?:hw/virtio|standard-headers)/[^"]+)"',
                                  self.tree.text(rel), re.M):
                todo.append(f"include/{inc}")
        return seen

    def _config(self, qmp_text: str, config_devices: Path | None) -> tuple[set[str], str]:
        tested = [(d, s) for d, s in tested_symbols(qmp_text) if s.startswith("CONFIG_")]
        if config_devices is not None:
            defined = set(re.findall(r"^#define (CONFIG_\w+) 1", config_devices.read_text(), re.M))
            origin = f"{config_devices.name}"
        else:
            kconfig = set()
            for p in self.tree.root.rglob("Kconfig*"):
                kconfig.update(re.findall(r"^config (\w+)", p.read_text(errors="replace"), re.M))
            unknown = sorted({s for _d, s in tested} - set(X86_64_CONFIG))
            if unknown:
                raise SourceError(f"{self.qmp_rel} tests {', '.join(unknown)}: add them to X86_64_CONFIG")
            for sym, on in X86_64_CONFIG.items():
                if any(s == sym for _d, s in tested) and on != (sym[7:] in kconfig):
                    raise SourceError(f"X86_64_CONFIG says {sym} is {'set' if on else 'unset'}, but it is "
                                      f"{'not ' if on else ''}a Kconfig symbol of this tree")
            defined = {s for s, on in X86_64_CONFIG.items() if on}
            origin = "x86_64 build"
        notes = []
        for d, s in dict.fromkeys(tested):
            if s not in defined:
                notes.append(f"{s} unset")
            elif d == "ifndef":
                notes.append(f"{s} set")
        return defined, f"{origin}: {', '.join(dict.fromkeys(notes))}" if notes else origin

    def func(self, name: str, rel: str | None = None) -> str:
        for r in ((rel,) if rel else (self.qmp_rel, self.virtio_rel)):
            try:
                return function_body(self.code[r] if r in self.code else self.tree.text(r), name)
            except SourceError:
                continue
        raise SourceError(f"{self.tree.root}: function {name} not found")

    def string(self, expr: str, in_binary: bool = True) -> str:
        """The text of C string literals; ``in_binary``: a build of the tree holds it (checked by --binary)."""
        text = c_strings(expr)
        if in_binary:
            self.literals.add(text)
        return text


# --- tables ------------------------------------------------------------------------------------------

def feature_maps(src: Sources) -> dict[str, list[dict]]:
    """Every ``qmp_virtio_feature_map_t name[] = {...}``: rows ``{"bit", "desc"}`` in table order."""
    maps = {}
    code = src.code[src.qmp_rel]
    for name, body in re.findall(r"qmp_virtio_feature_map_t\s+(\w+)\[\]\s*=\s*\{(.*?)\n\};", code, re.S):
        rows = []
        for macro, strs in re.findall(r"FEATURE_ENTRY\((\w+),\s*\\?\s*((?:\"(?:[^\"\\]|\\.)*\"\s*)+)\)", body):
            if macro not in src.consts:
                raise SourceError(f"{src.qmp_rel} {name}: no value for {macro}")
            rows.append({"bit": src.consts[macro], "desc": src.string(strs)})
        if not re.search(r"\{\s*-1,\s*\"\"\s*\}", body):
            raise SourceError(f"{src.qmp_rel} {name}: no {{ -1, \"\" }} terminator")
        maps[name] = rows
    return maps


def decode_switch(src: Sources) -> dict[int, str | None]:
    """``qmp_decode_features()``'s switch: device id -> map name (None: a case with no table)."""
    body = src.func("qmp_decode_features")
    switch = body[body.index("switch (device_id)"):]
    out: dict[int, str | None] = {}
    pending: list[int] = []
    mapname: str | None = None
    default = ""
    lines = iter(switch.splitlines())
    for line in lines:
        if m := re.match(r"\s*case (VIRTIO_ID_\w+):", line):
            pending.append(src.consts[m.group(1)])
        elif m := re.search(r"CONVERT_FEATURES(?:_EX)?\(strList,\s*(\w+),", line):
            mapname = m.group(1)
        elif re.match(r"\s*break;", line):
            for dev in pending:
                if dev in out:
                    raise SourceError(f"device id {dev} twice in qmp_decode_features")
                out[dev] = mapname
            pending, mapname = [], None
        elif re.match(r"\s*default:", line):
            default = next(lines).strip()
            break
    if default != "g_assert_not_reached();":
        raise SourceError(f"qmp_decode_features: unexpected default branch {default!r}")
    return out


def vring_desc_flags(src: Sources) -> list[dict]:
    body = src.func("qmp_decode_vring_desc_flags", src.virtio_rel)
    rows = []
    for expr, name in re.findall(r"\{\s*((?:1 << )?\w+),\s*\"(\w+)\"\s*\}", body):
        mask = 1 << src.consts[expr[5:]] if expr.startswith("1 << ") else src.consts[expr]
        rows.append({"mask": mask, "name": src.string(f'"{name}"')})
    return rows


def device_names(src: Sources) -> dict[str, str]:
    m = re.search(r"virtio_device_names\[\]\s*=\s*\{(.*?)\};", src.code[src.virtio_rel], re.S)
    if not m:
        raise SourceError(f"{src.virtio_rel}: virtio_device_names[] not found")
    pairs = [(src.consts[k], src.string(f'"{v}"'))
             for k, v in re.findall(r"\[(VIRTIO_ID_\w+)\]\s*=\s*\"([^\"]+)\"", m.group(1))]
    return {str(k): v for k, v in sorted(pairs)}


def endian_names(src: Sources) -> dict[str, str]:
    body = src.func("qmp_x_query_virtio_status")
    out = {}
    for case, name in re.findall(r"case (VIRTIO_DEVICE_ENDIAN_\w+):\s*status->device_endian = "
                                 r"g_strdup\(\"(\w+)\"\)", body):
        out[src.consts[case]] = src.string(f'"{name}"')
    m = re.search(r"default:\s*status->device_endian = g_strdup\(\"(\w+)\"\)", body)
    if not m:
        raise SourceError("qmp_x_query_virtio_status: device_endian default not found")
    out[src.consts["VIRTIO_DEVICE_ENDIAN_UNKNOWN"]] = src.string(f'"{m.group(1)}"')
    return {str(k): out[k] for k in sorted(out)}


def discovery_rules(src: Sources) -> dict[str, str]:
    """How ``x-query-virtio`` lists devices and how a ``path`` argument finds one."""
    listing = src.func("qmp_x_query_virtio")
    if re.search(r"QTAILQ_FOREACH\(\w+,\s*&virtio_list", listing):
        discovery = "virtio_list"
    elif "object_child_foreach_recursive(object_get_root()" in listing:
        discovery = "qom-tree"
    else:
        raise SourceError("qmp_x_query_virtio: neither a virtio_list walk nor a QOM tree walk")
    status = src.func("qmp_x_query_virtio_status")
    finder = next(n for n in ("qmp_find_virtio_device", "virtio_device_find") if f"{n}(" in status)
    body = src.func(finder)
    if "object_resolve_path(" in body:
        lookup = "object_resolve_path"
    elif re.search(r"QTAILQ_FOREACH\(\w+,\s*&virtio_list", body) and "canonical_path" in body:
        lookup = "virtio_list"
    else:
        raise SourceError(f"{finder}: unknown way of finding a device")
    return {"device_discovery": discovery, "device_lookup": lookup}


# --- error texts -------------------------------------------------------------------------------------

def error_calls(src: Sources, body: str) -> list[tuple[str | None, str, list[str]]]:
    """``(ERROR_CLASS_* or None, format text, [argument, ...])`` of each error call of a function."""
    out = []
    for fn, args in find_calls(body, ERROR_CALLS):
        if fn == "qdict_put_str":
            if len(args) == 3 and c_strings(args[1]) == "desc":
                cls = re.search(r"ERROR_CLASS_\w+", body)
                out.append((cls.group(0) if cls else None, src.string(args[2]), []))
            continue
        cls, fmt_i = (args[1], 2) if fn == "error_set" else ("ERROR_CLASS_GENERIC_ERROR", 1)
        fmt = args[fmt_i]
        if not is_string_literal(fmt):
            fmt = qerror_macro(src, fmt)
        else:
            fmt = src.string(fmt)
        out.append((cls, fmt, args[fmt_i + 1:]))
    return out


def qerror_macro(src: Sources, name: str) -> str:
    for rel in ("include/qapi/qmp/qerror.h", "include/qapi/qerror.h"):
        if src.tree.has(rel):
            m = re.search(rf"#define {re.escape(name)}\s*\\?\s*((?:\"(?:[^\"\\]|\\.)*\"\s*)+)", src.tree.text(rel))
            if m:
                return src.string(m.group(1))
    raise SourceError(f"{name}: not a string literal nor a QERR_* macro")


def fill_literals(src: Sources, fn: str, fmt: str, args: list[str]) -> str:
    """Put the string-literal arguments (and BIND ones) into their ``%s``; keep the others."""
    convs = list(re.finditer(r"%[-0-9.]*(?:l{0,2}|z|PRI\w+)[sdui]", fmt))
    out, pos = [], 0
    for conv, arg in zip(convs, args):
        lit = None
        if conv.group(0) == "%s" and is_string_literal(arg):
            lit = src.string(arg)
        elif (fn, arg) in BIND:
            rel, caller, callee, index = BIND[(fn, arg)]
            calls = [a for _f, a in find_calls(function_body(src.tree.text(rel), caller), (callee,))]
            if not calls or not is_string_literal(calls[0][index]):
                raise SourceError(f"{caller}: no string literal passed to {callee}")
            lit = src.string(calls[0][index])
        if lit is not None:
            out.append(fmt[pos:conv.start()] + lit)
            pos = conv.end()
    return "".join(out) + fmt[pos:]


def core_texts(src: Sources, specs: tuple) -> tuple[dict[str, str], dict[str, str]]:
    """The texts of ``specs`` (key, file, function, n) and the error class of each."""
    texts, classes = {}, {}
    for key, rel, fn, n in specs:
        before = set(src.literals)
        body = function_body(src.tree.text(rel), fn)
        calls = error_calls(src, body)
        if len(calls) <= n:
            raise SourceError(f"{rel} {fn}: {len(calls)} error calls, wanted number {n + 1}")
        cls, fmt, args = calls[n]
        texts[key] = fill_literals(src, fn, fmt, args)
        classes[key] = cls
        if rel.endswith("-stub.c"):          # built only without CONFIG_VIRTIO: not in a virtio binary
            src.literals = before
    return texts, classes


def qapi_error_class(src: Sources, c_name: str) -> str:
    enum = next(e for e in parse_qapi(src.tree.text("qapi/error.json")) if e.get("enum") == "QapiErrorClass")
    for member in enum["data"]:
        name = member if isinstance(member, str) else member["name"]
        if "ERROR_CLASS_" + camel_to_upper(name) == c_name:
            return name
    raise SourceError(f"qapi/error.json: no QapiErrorClass member for {c_name}")


def command_errors(src: Sources) -> dict[str, list[str]]:
    """The ``error_setg`` format strings of each ``qmp_x_query_virtio*`` function, in source order."""
    return {fn: [fmt for _c, fmt, _a in error_calls(src, src.func(fn))] for fn in VIRTIO_COMMANDS}


# --- QAPI --------------------------------------------------------------------------------------------

def members(data: dict) -> list[dict]:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            if set(v) - {"type"}:
                raise SourceError(f"QAPI member {k}: {sorted(v)} (conditional members: extend the generator)")
            v = v["type"]
        out.append({"name": k.lstrip("*"), "optional": k.startswith("*"), "type": v})
    return out


def qapi_tables(text: str, commands: tuple[str, ...] | None = None) -> dict:
    """Commands (all, or ``commands``) and the structs and enums their arguments and returns reach."""
    exprs = parse_qapi(text)
    structs = {e["struct"]: e for e in exprs if "struct" in e}
    enums = {e["enum"]: e for e in exprs if "enum" in e}
    cmds = {e["command"]: e for e in exprs if "command" in e and (commands is None or e["command"] in commands)}
    reached: set[str] = set()

    def reach(t):
        t = t[0] if isinstance(t, list) else t
        if isinstance(t, str) and t in structs and t not in reached:
            reached.add(t)
            for v in structs[t]["data"].values():
                reach(v["type"] if isinstance(v, dict) else v)
        elif isinstance(t, str) and t in enums:
            reached.add(t)

    for e in cmds.values():
        for v in e.get("data", {}).values():
            reach(v)
        if commands is None:
            reach(e.get("returns"))
    return {
        "structs": {n: members(e["data"]) for n, e in structs.items() if n in reached},
        "enums": {n: [m if isinstance(m, str) else m["name"] for m in e["data"]]
                  for n, e in enums.items() if n in reached},
        "commands": {n: {"args": members(e.get("data", {})), "returns": e.get("returns"),
                         "features": e.get("features", [])} for n, e in cmds.items()},
    }


# --- Debian's distro patches -------------------------------------------------------------------------

def distro_string_changes(src: Sources, rel: str) -> list[tuple[str, str, str]]:
    """``(patch, old, new)`` string literals a non-stable Debian patch changes in ``rel``."""
    out = []
    for name in src.tree.debian_patches:
        if re.fullmatch(r"v\d+(\.\d+)+\.diff", name):
            continue                                   # upstream stable releases: named by VERSION
        text = src.tree.patch_text(name)
        for part in re.split(r"^diff --git ", text, flags=re.M):
            if not re.search(rf"^\+\+\+ b/{re.escape(rel)}$", part, re.M):
                continue
            minus = [c_strings(ln) for ln in part.splitlines() if ln.startswith("-") and not ln.startswith("---")]
            plus = [c_strings(ln) for ln in part.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
            out += [(name, a, b) for a, b in zip(minus, plus) if a and b and a != b]
    return out


# --- build -------------------------------------------------------------------------------------------

def build(tree: Tree, config_devices: Path | None = None) -> dict[str, dict]:
    src = Sources(tree, config_devices)
    label, qmp = tree.label, src.qmp_rel
    maps = feature_maps(src)
    switch = decode_switch(src)
    special = ("virtio_transport_map", "virtio_config_status_map", "vhost_user_protocol_map")
    for name in special:
        if name not in maps:
            raise SourceError(f"{qmp}: {name} not found")

    changed = [(p, a, b) for p, a, b in distro_string_changes(src, qmp)
               if any(b in r["desc"] for rows in maps.values() for r in rows)]
    patch_note = "".join(
        f"; with Debian's debian/patches/{p} applied (Debian {tree.debian} prints '...{b}', upstream "
        f"{tree.upstream} '...{a}')" for p, a, b in changed)
    checked = BINARY_CHECKED.get(tree.upstream)
    binary_note = (f"; every string checked in the binary of {checked[0]} (build-id {checked[1]}): "
                   "the same as the source" if checked else "")

    def rows(name: str, key: str = "bit") -> list[dict]:
        return [{key: r["bit"], "desc": r["desc"]} for r in maps[name]]

    features = {
        "qemu": tree.upstream,
        "source": (f"{label} {qmp}: virtio_transport_map[], the per-device maps, virtio_config_status_map[], "
                   f"vhost_user_protocol_map[], qmp_decode_features() switch ({src.config_note}); "
                   f"{src.virtio_rel} qmp_decode_vring_desc_flags() map; rows in table order"
                   f"{patch_note}{binary_note}"),
        "generated_by": GENERATED_BY,
        "transport": rows("virtio_transport_map"),
        "devices": {str(dev): ({"map": name, "rows": rows(name)} if name else {"map": None, "rows": []})
                    for dev, name in switch.items()},
        "status": rows("virtio_config_status_map", "mask"),
        "vhost_user_protocol": rows("vhost_user_protocol_map"),
        "vring_desc_flags": vring_desc_flags(src),
    }

    rules = discovery_rules(src)
    devices = {
        "qemu": tree.upstream,
        "source": (f"{label} {src.virtio_rel}: virtio_device_names[] (by VIRTIO_ID_*), VIRTIO_PCI_VRING_ALIGN; "
                   f"{qmp}: qmp_x_query_virtio_status() device_endian switch, qmp_x_query_virtio() "
                   "(device_discovery: 'virtio_list' = walk of virtio_list, 'qom-tree' = "
                   "object_child_foreach_recursive from the QOM root), the device finder of the path "
                   "argument (device_lookup: 'virtio_list' = exact canonical_path match on virtio_list, "
                   "'object_resolve_path' = QOM path resolution, partial paths too); "
                   f"include/hw/virtio/virtio.h VIRTIO_QUEUE_MAX{binary_note}"),
        "generated_by": GENERATED_BY,
        "names": device_names(src),
        "endian": endian_names(src),
        "queue_max": src.consts["VIRTIO_QUEUE_MAX"],
        "vring_align_default": src.consts["VIRTIO_PCI_VRING_ALIGN"],
        **rules,
    }

    q = qapi_tables(tree.text("qapi/virtio.json"))
    qapi = {
        "qemu": tree.upstream,
        "source": (f"{label} qapi/virtio.json: the x-query-virtio* commands and the structs they return "
                   "(members and arguments in schema order)"),
        "generated_by": GENERATED_BY,
        "structs": q["structs"],
        "commands": q["commands"],
        "envelope": {"return": "return", "id": "id", "error": "error", "class": "class", "desc": "desc"},
    }

    errs = command_errors(src)
    ls, st, vq, qs, el = (errs[f] for f in VIRTIO_COMMANDS)
    if len(ls) > 1 or len(st) != 1 or len(vq) != 3 or len(qs) != 2 or len(el) != 6:
        raise SourceError(f"unexpected error_setg counts: {[len(x) for x in (ls, st, vq, qs, el)]}")
    next_desc = find_calls(src.func("virtqueue_split_read_next_desc", src.virtio_rel), ("virtio_error",))
    if not next_desc:
        raise SourceError("virtqueue_split_read_next_desc: no virtio_error")
    core, core_classes = core_texts(src, CORE_ERRORS)
    generic = qapi_error_class(src, "ERROR_CLASS_GENERIC_ERROR")
    per_command = {}
    if ls:
        per_command["x-query-virtio"] = {"no_devices": ls[0]}
    per_command.update({
        "x-query-virtio-status": {"device_not_found": st[0]},
        "x-query-virtio-vhost-queue-status": {"device_not_found": vq[0], "vhost_not_started": vq[1],
                                              "vhost_invalid_queue": vq[2]},
        "x-query-virtio-queue-status": {"device_not_found": qs[0], "invalid_queue": qs[1]},
        "x-query-virtio-queue-element": {"device_not_found": el[0], "invalid_queue": el[1], "packed": el[2],
                                         "region_caches": el[3], "cannot_map_desc": el[4],
                                         "cannot_map_indirect": el[5]},
    })
    errors = {
        "qemu": tree.upstream,
        "source": (f"{label} {', '.join(dict.fromkeys((qmp, src.virtio_rel)))}: error_setg() strings of "
                   + ", ".join(VIRTIO_COMMANDS) + "; virtqueue_split_read_next_desc() virtio_error (stderr "
                   "only, not a reply); QMP core texts from " + ", ".join(dict.fromkeys(s[1] for s in CORE_ERRORS))
                   + ". printf-style placeholders kept; 'no_devices' is null where x-query-virtio "
                   f"returns [] for no devices{binary_note}"),
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
        "desc_next": src.string(next_desc[0][1][1]),
        "no_devices": ls[0] if ls else None,
        **core,
        "commands": per_command,
        "classes": {"default": generic,
                    **{k: qapi_error_class(src, c) for k, c in core_classes.items()
                       if c and qapi_error_class(src, c) != generic}},
    }

    control = qapi_tables(tree.text("qapi/control.json"), QMP_CORE_COMMANDS)
    missing = [c for c in QMP_CORE_COMMANDS if c not in control["commands"]]
    if missing:
        raise SourceError(f"qapi/control.json: no command {', '.join(missing)}")
    core_texts_, _ = core_texts(src, QMP_CORE_ERRORS)
    qmp_core = {
        "qemu": tree.upstream,
        "source": (f"{label} qapi/control.json ({', '.join(QMP_CORE_COMMANDS)}: arguments in schema order; "
                   "the enums they take) and " + ", ".join(f"{s[1]} {s[2]}()" for s in QMP_CORE_ERRORS)
                   + " (the texts of list and enum argument errors)"),
        "generated_by": GENERATED_BY,
        "commands": {c: {"args": control["commands"][c]["args"]} for c in QMP_CORE_COMMANDS},
        "enums": control["enums"],
        "errors": core_texts_,
    }
    out = {"features": features, "devices": devices, "qapi": qapi, "errors": errors, "qmp_core": qmp_core}
    out["_literals"] = src.literals                      # type: ignore[assignment]
    return out


# --- output ------------------------------------------------------------------------------------------

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


def build_id(path: Path) -> str | None:
    """The GNU build-id of an ELF64 little-endian file (its ``.note.gnu.build-id``)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    for i in range(shnum):
        _n, typ, _f, _a, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        pos = off
        while typ == 7 and pos + 12 <= off + size:           # SHT_NOTE
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name_end = pos + 12 + ((namesz + 3) & ~3)
            if ntype == 3 and data[pos + 12:pos + 12 + namesz] == b"GNU\0":
                return data[name_end:name_end + descsz].hex()
            pos = name_end + ((descsz + 3) & ~3)
    return None


def check_binary(tree: Tree, literals: set[str], binary: Path) -> list[str]:
    """Problems: table strings not in the binary's .rodata, or a build-id unlike BINARY_CHECKED's."""
    data = binary.read_bytes()
    problems = [f"not in {binary}: {s!r}" for s in sorted(literals)
                if s and (s.encode() + b"\0") not in data]
    want = BINARY_CHECKED.get(tree.upstream)
    have = build_id(binary)
    if want and have != want[1]:
        problems.append(f"{binary} has build-id {have}, BINARY_CHECKED names {want[1]} for {tree.upstream}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu-src", required=True, type=Path, help="a QEMU source tree (debian/patches applied)")
    ap.add_argument("--version", help="profile version, the folder formats/qemu-VERSION (default: the tree's X.Y)")
    ap.add_argument("--out", type=Path, help="output folder (default: formats/qemu-VERSION in this checkout)")
    ap.add_argument("--config-devices", type=Path, help="a build's x86_64-softmmu-config-devices.h "
                    "(default: X86_64_CONFIG in this script)")
    ap.add_argument("--binary", type=Path, help="a qemu-system-x86_64 built from this tree: check that every "
                    "table string is in it")
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if a file differs")
    args = ap.parse_args(argv)
    try:
        tree = Tree.open(args.qemu_src)
        version = args.version or ".".join(tree.upstream.split(".")[:2])
        if not tree.upstream.startswith(version + ".") and tree.upstream != version:
            raise SourceError(f"{args.qemu_src} is QEMU {tree.upstream}, not {version}")
        tables = build(tree, args.config_devices)
    except SourceError as err:
        print(f"gen_formats: {err}", file=sys.stderr)
        return 2
    literals = tables.pop("_literals")
    if args.binary:
        problems = check_binary(tree, literals, args.binary)     # type: ignore[arg-type]
        for p in problems:
            print(f"gen_formats: {p}", file=sys.stderr)
        if problems:
            return 1
    out = args.out or ROOT / "formats" / f"qemu-{version}"
    stale = []
    for name, obj in tables.items():
        path = out / f"{name}.json"
        text = dumps(obj) + "\n"
        if args.check:
            old = path.read_text() if path.exists() else ""
            if old != text:
                stale.append(path)
                sys.stderr.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                           str(path), "generated", n=0))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for p in stale:
        print(f"stale: {p}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

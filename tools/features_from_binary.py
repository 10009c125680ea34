#!/usr/bin/env python3
"""Rewrite a profile's ``features.json`` with the tables a QEMU executable holds.

usage: features_from_binary.py TEMPLATE.json QEMU-BINARY -o OUT.json [--qemu 11.1.3]

TEMPLATE is a ``features.json`` made by ``tools/gen_formats.py`` from the nearest source tree (its map
names, devices and ``vring_desc_flags`` are kept). Each ``qmp_virtio_feature_map_t`` table of the
executable (read as ``vdecode.sources.qemu_core.strings.read_feature_maps`` reads it: ``.data.rel.ro``
entries whose string pointers are relocations) replaces the rows of the template's map it matches
(``match_tables``: by its own rows' ``(value, macro name)`` pairs), in the executable's
order. So a release whose source is not at hand (Debian's 11.1.3: no source package reachable here)
gets the strings it prints, byte for byte, and the template says which map is which.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vdecode.sources.qemu_core.strings import _sections, match_tables, read_feature_maps  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("template", type=Path)
    ap.add_argument("binary")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--qemu", help="the release the executable is (features.json 'qemu')")
    a = ap.parse_args()
    data = json.loads(a.template.read_text())
    sections = _sections(data)
    tables = read_feature_maps(a.binary)
    if not tables:
        sys.exit(f"{a.binary}: no qmp_virtio_feature_map_t tables found")
    done = match_tables(tables, data)
    for name, rows in done.items():
        field = sections[name][0]
        new = [{field: v, "desc": d} for v, d in rows]
        if name in ("transport", "status", "vhost_user_protocol"):
            data[name] = new
        else:
            for entry in data["devices"].values():
                if entry.get("map") == name:
                    entry["rows"] = new
    missing = sorted(set(sections) - set(done))
    if a.qemu:
        data["qemu"] = a.qemu
    data["source"] = (f"the qmp_virtio_feature_map_t tables of {Path(a.binary).name} (QEMU {a.qemu or '?'}: "
                      f".data.rel.ro rows, strings by relocation), in the executable's order; map names, "
                      f"devices and vring_desc_flags from {data.get('source', a.template)}"
                      + (f"; maps not found in the executable, kept from the template: {', '.join(missing)}"
                         if missing else ""))
    data["generated_by"] = "tools/features_from_binary.py"
    a.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"{a.out}: {len(done)} maps from the executable, {len(missing)} kept from the template")
    return 0


if __name__ == "__main__":
    sys.exit(main())

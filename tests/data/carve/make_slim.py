#!/usr/bin/env python3
"""Make the slim ELF fixtures here from full recordings (tools/capture, kept outside the repo).

usage: make_slim.py CAPTURE_DIR OUT.elf

Keeps, from CAPTURE_DIR/dump.elf, every page vdecode reads (reads under 1 MiB: ring checks,
driver records, indirect tables, ring fields) while answering truth.json with early.jsonl, plus
every carved ring's areas and its driver record; every other page of RAM becomes a zero tail
(``p_memsz`` beyond ``p_filesz``), so the RAM layout is the original's. Then
``zstd -19 OUT.elf``.
"""
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout
from vdecode.space.segmented import SegmentedSpace
from vdecode.space.open import open_dump
from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log
from vdecode.reconstruct.qmp.commands import COMMANDS
from vdecode.reconstruct.state.session import build_machine, profile_for
from vdecode.reconstruct.qmp.error_replies import QmpError
from vdecode.virtio.carve import carve_rings, CONFIDENCE_THRESHOLD
from vdecode.errors import VdecodeError
from tests.builders.elf_dump import write_elf_dump, LoadSegment

src, out = sys.argv[1], sys.argv[2]
pages = set()
orig = SegmentedSpace.read
def rec(self, gpa, n):
    if n < (1 << 20):
        for p in range(gpa >> 12, ((gpa + max(n, 1) - 1) >> 12) + 1):
            pages.add(p)
    return orig(self, gpa, n)
SegmentedSpace.read = rec
d = open_dump(f"{src}/dump.elf")
log = read_qmp_log(f"{src}/early.jsonl", None, None)
k = LogKnowledge.from_log(log, None)
prof = profile_for(k, None)
m, notes = build_machine(d, k, prof)
for req, _ in json.load(open(f"{src}/truth.json"))["exchanges"]:
    fn = COMMANDS.get(req.get("execute"))
    if fn:
        try:
            fn(m, prof, req.get("arguments", {}))
        except (QmpError, VdecodeError, KeyError, TypeError):
            pass
for r in carve_rings(d.space, threshold=CONFIDENCE_THRESHOLD):
    for lo, hi in ((r.desc, r.desc + 16 * r.num), (r.avail, r.avail + 6 + 2 * r.num), (r.used, r.used + 6 + 8 * r.num)):
        pages.update(range(lo >> 12, ((hi - 1) >> 12) + 1))
    if r.driver_gpa is not None:
        pages.update(range((r.driver_gpa - 96) >> 12, ((r.driver_gpa + 32) >> 12) + 1))
SegmentedSpace.read = orig
(ram_start, ram_size), *rest = d.space.ranges()
segs = []
cur = 0
for p in sorted(pages):
    a = p << 12
    if a >= ram_start + ram_size:
        continue
    if a > cur:
        segs.append(LoadSegment(cur, b"", a - cur))
    segs.append((a, bytes(d.space.read(a, 4096))))
    cur = a + 4096
if cur < ram_size:
    segs.append(LoadSegment(cur, b"", ram_size - cur))
# merge adjacent data pages
merged = []
for s in segs:
    if isinstance(s, tuple) and merged and isinstance(merged[-1], tuple) and merged[-1][0] + len(merged[-1][1]) == s[0]:
        merged[-1] = (merged[-1][0], merged[-1][1] + s[1])
    else:
        merged.append(s)
write_elf_dump(out, merged)
print(len(pages), "pages", len(merged), "segments")

#!/usr/bin/env python3
"""Cut a real libvirtd debug log down to the monitor traffic of the test VMs (a few KB).

usage: trim_libvirt_log.py IN OUT [MAX_RECORD]
Keeps, from the first ``qemuProcessStart`` on (libvirt's capability-probe QEMUs come before),
the records vdecode reads (QEMU_MONITOR_*, ``Line [...]``, ``Entering monitor``,
``qemuProcessStart``, the taint warnings that give name and UUID) with their continuation lines, minus the exchanges of start-up floods
(``qom-get`` of every CPU property, ...) and of records longer than MAX_RECORD characters, each
dropped whole (command, reply and ``Line [`` copy). Nothing is rewritten.
"""
import re
import sys

KEEP = re.compile(r"QEMU_MONITOR_|qemuMonitorJSONIOProcessLine|Entering monitor|qemuProcessStart:|qemuDomainObjTaintMsg")
HEAD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+\d{4}: ")
MON_ID = re.compile(r'mon=(0x[0-9a-f]+) .*"id": ?"(libvirt-\d+)"')
ID = re.compile(r'"id": ?"(libvirt-\d+)"')
CMD = re.compile(r'mon=(0x[0-9a-f]+) (?:msg|buf)=\{"execute":"([\w-]+)".*"id":"(libvirt-\d+)"')
FLOODS = {"qom-get", "qom-list", "query-named-block-nodes", "query-cpu-model-expansion",
          "query-cpu-definitions", "qom-list-properties", "query-qmp-schema", "query-command-line-options",
          "query-hotpluggable-cpus", "query-cpus-fast", "query-migrate-capabilities",
          "migrate-set-capabilities", "query-iothreads"}


def records(lines):
    rec = []
    for line in lines:
        if HEAD.match(line) and rec:
            yield rec
            rec = []
        rec.append(line)
    if rec:
        yield rec


def main():
    src, dst = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    with open(src, encoding="utf-8", errors="replace", newline="") as f:
        recs = list(records(f))
    start = next(i for i, r in enumerate(recs) if "qemuProcessStart:" in r[0])
    recs = [r for r in recs[start:] if KEEP.search(r[0])]
    long_ids = set()
    for r in recs:
        text = "".join(r)
        c = CMD.search(text)
        if c and c.group(2) in FLOODS:
            long_ids.add(f"{c.group(3)}@{c.group(1)}")
        if len(text) > limit:
            m = ID.search(text)
            if m:
                long_ids.add(m.group(1) + "@" + (MON_ID.search(text).group(1) if MON_ID.search(text) else ""))
    out = []
    for r in recs:
        text = "".join(r)
        if len(text) > limit:
            continue
        m = MON_ID.search(text)
        if m and f"{m.group(2)}@{m.group(1)}" in long_ids:
            continue
        i = ID.search(text)
        if "Line [" in text and i and any(k.startswith(i.group(1) + "@") for k in long_ids):
            continue
        out.append(text)
    with open(dst, "w", encoding="utf-8", newline="") as f:
        f.writelines(out)


if __name__ == "__main__":
    main()

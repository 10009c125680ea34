#!/usr/bin/env python3
"""Make the slim kernel-written QEMU core (and guest dump) here from a full recording
(tools/capture, kept outside the repository). See README.md.

usage: make_slim_core.py RECORDING_DIR OUT_DIR

RECORDING_DIR holds ``qemu.core`` (as the kernel wrote it), ``truth.json`` and, optionally,
``dump.elf`` (QEMU's ``dump-guest-memory`` of the same instant). The script runs vdecode on the
full files, once per workload below, each in a child process that records which file pages of
each input it reads (:class:`~vdecode.space.segmented.SegmentedSpace` reads and direct
``FileView.view`` reads, by 4 KiB page of the file; the bytes a pattern scan looks through but
does not match are not counted, as zeros match no scan and what a scan finds is read again):

* ``vdecode info`` (text and ``--json``) and ``vdecode qmp qemu.core`` answering every request
  of ``truth.json`` plus an element request for every queue (they must error: no guest RAM), each
  with no binary, with another binary (the Python interpreter: another build-id) and with the
  binary the core names, when it is installed;
* ``vdecode qmp qemu.core dump.elf`` and ``vdecode qmp dump.elf qemu.core``, the same requests.

Then it writes ``OUT_DIR/qemu.core`` (and ``OUT_DIR/dump.elf``): the full file with every byte
of every ``PT_LOAD`` that no workload read set to zero. The ELF header, the program headers, the
notes (NT_PRSTATUS, NT_SIGINFO, NT_AUXV, NT_FILE, ...) and every byte outside the PT_LOADs' file
ranges are the writer's, byte for byte; size and layout are unchanged. It checks that every
workload gives byte-identical stdout, stderr and exit status on the slim files and on the full
ones, writes ``qemu.core.zst`` (and ``dump.elf.zst``; zstd level 19) and removes the plain slim
files.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]          # the checkout
sys.path.insert(0, str(REPO))
PAGE = 4096
SYSTEM_QEMU = "/usr/bin/qemu-system-x86_64"


# --- the recorder (runs in the child, around vdecode's own main) ------------------------------


def _record_and_run(pages_out: str, targets: list[str], argv: list[str]) -> None:
    import atexit
    import threading

    from vdecode.sources import files
    from vdecode.sources.qemu_core import devices, memory, process, ram
    from vdecode.space import segmented

    pages: dict[str, set[int]] = {os.path.realpath(t): set() for t in targets}
    quiet = threading.local()

    def note(file, offset: int, n: int) -> None:
        if getattr(quiet, "on", 0) or n <= 0:
            return
        got = pages.get(os.path.realpath(file.path))
        if got is not None:
            got.update(range(offset // PAGE, (offset + n - 1) // PAGE + 1))

    view = files.FileView.view

    def rec_view(self, offset, n, what="data"):
        note(self, offset, n)
        return view(self, offset, n, what)
    files.FileView.view = rec_view

    read = segmented.SegmentedSpace.read

    def rec_read(self, addr, n):
        if not getattr(quiet, "on", 0) and n > 0:
            try:
                for _, size, off in self.mapping(addr, n):
                    if off is not None:
                        note(self.file, off, size)
            except Exception:       # the read itself raises what vdecode expects
                pass
        quiet.on = getattr(quiet, "on", 0) + 1        # its own file.view calls are counted above
        try:
            return read(self, addr, n)
        finally:
            quiet.on -= 1
    segmented.SegmentedSpace.read = rec_read

    def scan_quietly(fn):
        """A scan reads whole runs; what it matches is read again, and recorded, by its caller."""
        def run(*a, **k):
            quiet.on = getattr(quiet, "on", 0) + 1
            try:
                out = fn(*a, **k)
                if hasattr(out, "__next__"):
                    out = list(out)
                return out
            finally:
                quiet.on -= 1
        return run

    memory.scan_runs = scan_quietly(memory.scan_runs)
    devices.scan_runs = ram.scan_runs = memory.scan_runs
    memory.find_pointers = scan_quietly(memory.find_pointers)
    devices.find_pointers = ram.find_pointers = memory.find_pointers
    devices.find_virtqueue_arrays = scan_quietly(devices.find_virtqueue_arrays)
    import vdecode.sources.qemu_core as qc
    qc.find_virtqueue_arrays = devices.find_virtqueue_arrays

    # The version text search: a match is kept (its pages), the rest of the runs is a scan.
    version = process.find_qemu_version

    def rec_version(mem, runs):
        quiet.on = getattr(quiet, "on", 0) + 1
        try:
            found = version(mem, runs)
        finally:
            quiet.on -= 1
        if found[0] is not None:
            for start, size in runs:
                quiet.on += 1
                try:
                    at = bytes(mem.read(start, size)).find(b"QEMU emulator version ")
                finally:
                    quiet.on -= 1
                if at >= 0:
                    mem.read(start + at, min(200, size - at))
                    break
        return found
    process.find_qemu_version = qc.find_qemu_version = rec_version

    def dump_pages() -> None:
        Path(pages_out).write_text(json.dumps({k: sorted(v) for k, v in pages.items()}))
    atexit.register(dump_pages)

    from vdecode.cli import main
    sys.argv = ["vdecode", *argv]
    main()


# --- the workloads ---------------------------------------------------------------------------


def _requests(truth: list) -> list[dict]:
    """``truth.json``'s requests, then an element request for every queue it asks the status of
    (without a guest dump each names the missing guest RAM; with one each is answered)."""
    reqs = [{"execute": "qmp_capabilities", "id": "caps"}]
    reqs += [dict(req, id=i) for i, (req, _) in enumerate(truth)]
    queues = sorted({(r["arguments"]["path"], r["arguments"]["queue"]) for r, want in truth
                     if r["execute"] == "x-query-virtio-queue-status" and "return" in want})
    n = len(reqs)
    for path, queue in queues:
        for extra in ({}, {"index": 0}):
            reqs.append({"execute": "x-query-virtio-queue-element",
                         "arguments": {"path": path, "queue": queue, **extra}, "id": n})
            n += 1
    return reqs


def workloads(truth: list, scratch: Path, with_dump: bool) -> list[tuple[str, list[str], str]]:
    """``(name, argv with CORE and DUMP standing for the inputs, stdin)``."""
    stdin = "".join(json.dumps(r) + "\n" for r in _requests(truth))
    nobinary = ["--binary", str(scratch / "no-such-qemu")]
    binaries = [("nobinary", nobinary), ("otherbinary", ["--binary", sys.executable])]
    if os.path.exists(SYSTEM_QEMU):
        binaries.append(("binary", []))
    out = []
    for name, extra in binaries:
        out.append((f"info-{name}", ["info", "CORE", *extra], ""))
        out.append((f"info-json-{name}", ["info", "--json", "CORE", *extra], ""))
        out.append((f"qmp-{name}", ["qmp", "CORE", *extra], stdin))
    if with_dump:
        out.append(("qmp-core-dump", ["qmp", "CORE", "DUMP", *nobinary], stdin))
        out.append(("qmp-dump-core", ["qmp", "DUMP", "CORE", *nobinary], stdin))
    return out


def _argv(argv: list[str], inputs: dict[str, Path], cache: Path) -> list[str]:
    return [str(inputs.get(a, a)) for a in argv] + ["--cache-dir", str(cache)]


def _run(cmd: list[str], stdin: str, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, VDECODE_CACHE=str(cache), PYTHONPATH=str(REPO))
    return subprocess.run(cmd, input=stdin.encode(), capture_output=True, env=env, cwd=REPO,
                          timeout=1800)


def record(inputs: dict[str, Path], jobs: list, scratch: Path) -> dict[str, set[int]]:
    """The file pages each input had read, over all the workloads."""
    pages: dict[str, set[int]] = {k: set() for k in inputs}
    for name, argv, stdin in jobs:
        out, cache = scratch / f"{name}.pages", scratch / f"cache-rec-{name}"
        r = _run([sys.executable, __file__, "--record", str(out), *map(str, inputs.values()),
                  "--", *_argv(argv, inputs, cache)], stdin, cache)
        got = json.loads(out.read_text())
        for k, path in inputs.items():
            pages[k] |= set(got[os.path.realpath(path)])
        print(f"record {name}: exit {r.returncode}, "
              + ", ".join(f"{len(got[os.path.realpath(p)])} pages of {p.name}" for p in inputs.values()),
              file=sys.stderr)
    return pages


def slim(src: Path, out: Path, pages: set[int]) -> tuple[int, int]:
    """Copy ``src`` to ``out`` with every unread PT_LOAD page zeroed: (pages kept, zeroed)."""
    from vdecode.sources.elf_dump import read_elf
    from vdecode.sources.files import FileView

    with FileView(src) as v:
        loads = read_elf(v).loads
        ranges = [(int(o), int(o) + int(z)) for o, z in zip(loads["p_offset"], loads["p_filesz"]) if z]
    shutil.copyfile(src, out)
    kept = zeroed = 0
    zero = bytes(PAGE)
    with open(out, "r+b") as f:
        for lo, hi in ranges:
            for p in range(lo // PAGE, (hi - 1) // PAGE + 1):
                a, b = max(lo, p * PAGE), min(hi, (p + 1) * PAGE)
                if p in pages:
                    kept += 1
                    continue
                f.seek(a)
                f.write(zero[:b - a])
                zeroed += 1
    return kept, zeroed


def check(full: dict[str, Path], slimmed: dict[str, Path], jobs: list, scratch: Path) -> None:
    """Every workload gives the same bytes on the slim inputs as on the full ones (each input's
    path written as its name)."""
    bad = []
    for name, argv, stdin in jobs:
        got = []
        for which, inputs in (("full", full), ("slim", slimmed)):
            cache = scratch / f"cache-{which}-{name}"
            r = _run([sys.executable, "-m", "vdecode", *_argv(argv, inputs, cache)], stdin, cache)
            text = r.stdout + b"\0" + r.stderr
            for k, path in inputs.items():
                text = text.replace(str(path).encode(), k.encode())
            got.append((r.returncode, text))
        same = got[0] == got[1]
        print(f"check {name}: exit {got[0][0]}, {len(got[0][1])} bytes of output, "
              f"{'identical' if same else 'DIFFERENT'}", file=sys.stderr)
        if not same:
            bad.append(name)
            (scratch / f"{name}.full").write_bytes(got[0][1])
            (scratch / f"{name}.slim").write_bytes(got[1][1])
    if bad:
        sys.exit(f"the slim inputs differ from the full ones in {bad}")


def compress(path: Path) -> Path:
    import zstandard
    out = path.with_name(path.name + ".zst")
    with open(path, "rb") as f, open(out, "wb") as z:
        zstandard.ZstdCompressor(level=19, threads=-1).copy_stream(f, z, size=path.stat().st_size)
    path.unlink()
    print(f"{out}: {out.stat().st_size} bytes", file=sys.stderr)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--record":
        pages_out, *rest = sys.argv[2:]
        sep = rest.index("--")
        _record_and_run(pages_out, rest[:sep], rest[sep + 1:])
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    dst.mkdir(parents=True, exist_ok=True)
    truth = json.loads((src / "truth.json").read_text())["exchanges"]
    full = {"CORE": src / "qemu.core"}
    if (src / "dump.elf").exists():
        full["DUMP"] = src / "dump.elf"
    slimmed = {"CORE": dst / "qemu.core", "DUMP": dst / "dump.elf"}
    slimmed = {k: slimmed[k] for k in full}
    with tempfile.TemporaryDirectory(prefix="vdecode-slim-core-") as tmp:
        scratch = Path(tmp)
        jobs = workloads(truth, scratch, "DUMP" in full)
        pages = record(full, jobs, scratch)
        for k in full:
            kept, zeroed = slim(full[k], slimmed[k], pages[k])
            print(f"{slimmed[k].name}: {kept} PT_LOAD pages kept, {zeroed} zeroed", file=sys.stderr)
        check(full, slimmed, jobs, scratch)
    for path in slimmed.values():
        compress(path)


if __name__ == "__main__":
    main()

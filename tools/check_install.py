#!/usr/bin/env python3
"""What users get: build the sdist and wheel, install them as users do, and run every command.

usage: check_install.py [--editable VENV] [--keep]

Builds the sdist and, from it, the wheel (``python -m build``: a wheel made from the sdist proves
the sdist carries everything), then makes two fresh virtual environments in a temporary directory:
one from ``pip install <checkout>`` (no ``-e``), one from the wheel. From a working directory
outside the checkout it runs every command of :data:`COMMANDS` on the shipped samples with the
editable install (``--editable``, default ``.venv``) and with both real installs, and fails when
an exit status, a byte of stdout or a written file differs, or when a command fails.
``.ci/run`` runs it after the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
# inputs are read from the checkout, the samples as the recorded fixtures: the wheel ships neither
# (its package data is formats/ only), and what is checked is the installed code reading them
DATA = ROOT / "tests" / "data"

QMP_SESSION = "\n".join([
    '{"execute": "qmp_capabilities"}',
    '{"execute": "x-query-virtio", "id": 1}',
    '{"execute": "x-query-virtio-status", "arguments": {"path": "/machine/peripheral-anon/device[0]/virtio-backend"}, "id": 2}',
    '{"execute": "x-query-virtio-queue-status", "arguments": {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "queue": 0}, "id": 3}',
    '{"execute": "x-query-virtio-queue-element", "arguments": {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "queue": 0}, "id": 4}',
    '{"execute": "x-query-virtio-vhost-queue-status", "arguments": {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "queue": 0}, "id": 5}',
    '{"execute": "x-query-virtio-status", "arguments": {"path": "/machine"}, "id": 6}',
    '{"execute": "query-version", "id": 7}',
]) + "\n"

# (name, argv after "vdecode" with {samples}/{data}/{out} placeholders, stdin, files the command
# writes)
COMMANDS: list[tuple[str, list[str], str | None, list[str]]] = [
    ("help", ["--help"], None, []),
    ("version", ["--version"], None, []),
]
for _vdb in ("basic-core.vdb", "mixed-elf-early.vdb"):
    _s = "{samples}/" + _vdb
    COMMANDS += [
        (f"info {_vdb}", ["info", _s], None, []),
        (f"info --json {_vdb}", ["info", "--json", _s], None, []),
        (f"view {_vdb}", [_s], None, []),
        (f"view --all {_vdb}", [_s, "--all"], None, []),
        (f"view --queue 0 {_vdb}", [_s, "--queue", "0"], None, []),
        (f"view --queue 0 --json {_vdb}", [_s, "--queue", "0", "--json"], None, []),
        (f"view --json {_vdb}", [_s, "--json"], None, []),
        (f"qmp {_vdb}", ["qmp", _s], QMP_SESSION, []),
        (f"bundle {_vdb}", ["bundle", _s, "-o", "{out}/re.vdb"], None, ["re.vdb"]),
        (f"info of the re-bundled {_vdb}", ["info", "{out}/re.vdb"], None, []),
        (f"report {_vdb}", ["report", _s, "-o", "{out}/r.html"], None, ["r.html"]),
        (f"report --svg {_vdb}", ["report", _s, "--device", "virtio-net", "--queue", "0",
                                  "--svg", "{out}/q0.svg"], None, ["q0.svg"]),
    ]
COMMANDS += [
    ("log", ["log", "{samples}/basic-early.jsonl"], None, []),
    ("log --json", ["log", "--json", "{samples}/basic-early.jsonl"], None, []),
    ("view --log", ["{samples}/basic-core.vdb", "--log", "{samples}/basic-early.jsonl"], None, []),
    ("qmp --log (a log alone)", ["qmp", "--log", "{samples}/basic-early.jsonl"], QMP_SESSION, []),
    ("record --help", ["record", "--help"], None, []),
    # a QEMU trace (compressed: read as a stream, not cached)
    ("trace", ["trace", "{data}/traces/tracereset.log.zst"], None, []),
    ("trace --json", ["trace", "--json", "{data}/traces/tracereset.log.zst"], None, []),
    # a compressed bundle is decompressed into the cache, which then lists it ("just now": the
    # install's own info has just used it)
    ("info of a compressed bundle", ["info", "{data}/captures/devices/qemu-core+none.vdb.zst"],
     None, []),
    ("cache list", ["cache", "list"], None, []),
]


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, **kw)


def make_venv(where: Path, install: list[str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    r = run([str(where / "bin" / "pip"), "install", "-q", *install])
    if r.returncode:
        sys.exit(f"check_install: pip install {' '.join(install)} failed:\n{r.stderr.decode()[-2000:]}")
    return where / "bin" / "vdecode"


def outcomes(vdecode: Path, work: Path) -> dict[str, tuple[int, bytes, dict[str, str]]]:
    """Each command's exit status, stdout and the digests of the files it wrote."""
    out: dict[str, tuple[int, bytes, dict[str, str]]] = {}
    # one scratch folder per install, kept across commands: "info of the re-bundled" reads what
    # "bundle" wrote just before it
    scratch = work / "out"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for name, argv, stdin, files in COMMANDS:
        args = [a.format(samples=SAMPLES, data=DATA, out=scratch) for a in argv]
        # SOURCE_DATE_EPOCH fixes a bundle's "created" stamp, so two installs write the same bytes
        r = run([str(vdecode), *args], input=stdin.encode() if stdin else None, cwd=work,
                env={"PATH": "/usr/bin:/bin", "HOME": str(work), "VDECODE_CACHE": str(work / "cache"),
                     "COLUMNS": "80", "LC_ALL": "C.UTF-8", "SOURCE_DATE_EPOCH": "1795573446"})
        digests = {f: hashlib.sha256((scratch / f).read_bytes()).hexdigest()
                   for f in files if (scratch / f).exists()}
        out[name] = (r.returncode, r.stdout, digests)
        if r.returncode:
            print(f"  {vdecode}: {name}: exit {r.returncode}: {r.stderr.decode()[-500:]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--editable", type=Path, default=ROOT / ".venv",
                    help="the venv of the editable install (default .venv)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vdecode-install-"))
    try:
        dist = tmp / "dist"
        r = run([str(a.editable / "bin" / "python"), "-m", "build", "--outdir", str(dist), str(ROOT)])
        if r.returncode:
            sys.exit(f"check_install: python -m build failed:\n{r.stderr.decode()[-2000:]}")
        wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            sys.exit(f"check_install: expected one wheel and one sdist in {dist}, got "
                     f"{[p.name for p in dist.iterdir()]}")
        print(f"check_install: built {sdists[0].name} and {wheels[0].name}")
        installs = {
            "editable": a.editable / "bin" / "vdecode",
            "pip install <checkout>": make_venv(tmp / "v-checkout", [str(ROOT)]),
            "wheel": make_venv(tmp / "v-wheel", [str(wheels[0])]),
        }
        work = tmp / "work"
        work.mkdir()
        results = {k: outcomes(v, work) for k, v in installs.items()}
        bad = 0
        ref = results["editable"]
        for name, _, _, _ in COMMANDS:
            if ref[name][0] != 0:
                print(f"FAIL {name}: exits {ref[name][0]} with the editable install")
                bad += 1
            for kind in ("pip install <checkout>", "wheel"):
                if results[kind][name] != ref[name]:
                    print(f"FAIL {name}: {kind} differs from the editable install "
                          f"(exit {results[kind][name][0]} vs {ref[name][0]}, stdout "
                          f"{len(results[kind][name][1])} vs {len(ref[name][1])} bytes)")
                    bad += 1
        print(f"check_install: {len(COMMANDS)} commands x {len(installs)} installs, "
              f"{bad} failures (working directory {work}, outside the checkout)")
        return 1 if bad else 0
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

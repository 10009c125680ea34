"""Score ``vdecode qmp`` against the replies a real QEMU gave (the captures' ``truth.json``).

The same measure as ``shared/tools/fidelity.py``: ``fields`` counts leaves of each reply equal to
QEMU's (lists compared whole), ``exact`` counts replies identical to QEMU's, key order included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def leaves(x, prefix=""):
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else k))
        return out or {prefix: "{}"}
    return {prefix: json.dumps(x)}


def run_qmp(args: list[str], requests: list[dict], timeout: int = 600,
            command: tuple[str, ...] = ("-m", "vdecode")) -> tuple[list[str], str]:
    """Run ``vdecode qmp ARGS`` with the requests on stdin; the raw stdout lines and stderr.
    ``command``: the Python arguments that start vdecode (another install's, a patched one)."""
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    r = subprocess.run([sys.executable, *command, "qmp", *args], input=stdin.encode(),
                       capture_output=True, timeout=timeout)
    return r.stdout.decode().split("\r\n"), r.stderr.decode()


# vdecode as an install whose formats/ is another folder (a release's profile left out):
# formats_dir() is replaced before the CLI runs
_WITH_FORMATS = ("import sys; from pathlib import Path; import vdecode.profiles as p; "
                 "d = Path(sys.argv.pop(1)); p.formats_dir = lambda: d; "
                 "from vdecode.cli import cli; cli()")


def with_formats(folder) -> tuple[str, ...]:
    """The ``command`` for :func:`run_qmp`/:func:`score_args` that runs vdecode with ``folder``
    as its formats/ (leave-one-out: an install without some release's profile)."""
    return ("-c", _WITH_FORMATS, str(folder))


def score_args(truth: list, args: list[str],
               command: tuple[str, ...] = ("-m", "vdecode"), timeout: int = 600) -> dict:
    """Replay ``truth``'s requests through ``vdecode qmp ARGS`` and score the replies."""
    reqs = [{"execute": "qmp_capabilities", "id": "caps"}]
    reqs += [dict(req, id=i) for i, (req, _) in enumerate(truth)]
    lines, err = run_qmp(args, reqs, timeout=timeout, command=command)
    replies = {}
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "id" in obj:
            replies[obj.pop("id")] = obj
    ok = total = exact = 0
    unlike = []
    for i, (_, want) in enumerate(truth):
        got = replies.get(i, {})
        w, g = leaves(want), leaves(got)
        ok += sum(1 for k in w if w[k] == g.get(k))
        total += len(w)
        same = json.dumps(want) == json.dumps(got)
        exact += same
        if not same:
            unlike.append(got)
    return {"fields": ok, "total": total, "exact": exact, "replies": len(truth), "stderr": err,
            "unlike": unlike}


def not_guessed(unlike: list[dict]) -> list[dict]:
    """The replies unlike QEMU's that are not vdecode's own refusal: with too little input a reply
    must be QEMU's or say it cannot answer, never a guess."""
    return [r for r in unlike
            if not r.get("error", {}).get("desc", "").startswith("vdecode: cannot answer")]


def score(capture, dump_kind: str, log_kind: str) -> dict:
    """A shared capture in one (dump, log) mode."""
    args = [str(capture.dump(dump_kind))]
    if log_kind != "none":
        args += ["--log", str(capture.log(log_kind))]
    return score_args(capture.truth, args)


def capture_modes(with_unanswerable: bool = True) -> list[tuple[str, str, str]]:
    """Every ``(capture, dump, log)`` mode ``fidelity.py`` scores; ``with_unanswerable=False``
    leaves out a guest dump with no log (nothing of QEMU's state to reproduce)."""
    from tests.conftest import capture_folders

    out = []
    for name, folder in capture_folders().items():
        manifest = json.loads((folder / "case.json").read_text())
        for dump in manifest["dumps"]:
            for log in ("instant", "early", "none"):
                if log != "none" and log not in manifest["logs"]:
                    continue
                if log == "instant" and dump != "elf":
                    continue
                if log == "none" and dump != "qemu-core" and not with_unanswerable:
                    continue
                out.append((name, dump, log))
    return out


def capture_mode_params(with_unanswerable: bool = True) -> list:
    """:func:`capture_modes` for ``pytest.mark.parametrize``: without the shared captures, one
    placeholder that skips with conftest's ``NO_CAPTURES`` (the folder and how to get it back),
    not pytest's bare "got empty parameter set"."""
    import pytest

    from tests.conftest import NO_CAPTURES

    return capture_modes(with_unanswerable) or [
        pytest.param(None, None, None, marks=pytest.mark.skip(reason=NO_CAPTURES), id="no-captures")]


RATCHET = Path(__file__).with_name("fidelity_ratchet.json")


def fixture_cases(data: Path) -> list[tuple[str, str]]:
    """``(case, mode)`` of every bundle fixture under ``data`` (``<case>/case.json`` ``bundles``),
    as ``tools/capture/make_fixtures.py`` writes them."""
    out = []
    if data.is_dir():
        for case in sorted(p for p in data.iterdir() if (p / "case.json").exists()):
            for mode in json.loads((case / "case.json").read_text())["bundles"]:
                out.append((case.name, mode))
    return out


def score_fixture(data: Path, name: str, mode: str) -> dict:
    """One bundle fixture replayed against its case's ``truth.json``."""
    case = data / name
    manifest = json.loads((case / "case.json").read_text())
    truth = json.loads((case / manifest["truth"]).read_text())["exchanges"]
    return score_args(truth, [str(case / manifest["bundles"][mode])])

"""Session fixtures: the real QEMU 7.2 captures, decompressed once: the x86_64 guests of
``../shared/captures`` (``$VDECODE_CAPTURES``) and the other targets' of
``../shared/captures-targets`` (``$VDECODE_CAPTURES_TARGETS``: an aarch64 ``virt`` guest, an s390x
``s390-ccw-virtio`` guest). Every capture-driven test runs on the cases of both folders, named by
their case folder (``basic``, ``mixed``, ``arm64``, ``s390x``): a name two folders share is an error
of the corpus, said at collection, since ratchets and goldens are keyed by it.

Dumps are stored zstd-compressed; in a test session each is decompressed on first use into a
folder of the session's own (``tmp_path_factory``), removed when the session ends: a run leaves the
system temp folder as it found it (about 1.8 GB of dumps used to stay in ``$TMPDIR``). Why not
the user's vdecode cache: tests must not write to the home folder, and decompressing them again
costs a few seconds of a ten-minute run. Scripts that build a :class:`Capture` themselves
(``tools/update_ratchet.py``) keep using ``$TMPDIR/vdecode-captures``, as ``fidelity.py`` does.

Every test runs with ``$VDECODE_CACHE`` set to a session folder too, so a command that
decompresses an input without ``--cache-dir`` never writes to ``~/.cache/vdecode``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import settings

# CI runs a fixed example sequence (a red CI must be reproducible, and a green one must not hang on
# a lucky draw); local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parent.parent
CAPTURES = Path(os.environ.get("VDECODE_CAPTURES", REPO.parent / "shared" / "captures"))
TARGETS = Path(os.environ.get("VDECODE_CAPTURES_TARGETS", CAPTURES.parent / "captures-targets"))
CACHE = Path(tempfile.gettempdir()) / "vdecode-captures"


def capture_folders() -> dict[str, Path]:
    """Every case of the capture folders, by name: x86_64's (``CAPTURES``) first, then the other
    targets' (``TARGETS``), each folder's cases sorted."""
    out: dict[str, Path] = {}
    for root in dict.fromkeys((CAPTURES, TARGETS)):      # the same folder given twice: once
        if not root.is_dir():
            continue
        for case in sorted(p for p in root.iterdir() if (p / "case.json").exists()):
            if case.name in out:
                raise pytest.UsageError(f"capture case {case.name!r} is in {out[case.name].parent} "
                                        f"and {root}: case names key ratchets and goldens, rename "
                                        f"one")
            out[case.name] = case
    return out


def capture_names() -> list[str]:
    return list(capture_folders())


def capture_arch(name: str) -> str:
    """The guest architecture of a case (its ``case.json``'s ``arch``; x86_64 when unsaid)."""
    return json.loads((capture_folders()[name] / "case.json").read_text()).get("arch", "x86_64")


class Capture:
    """One recorded case: its manifest, truth, logs and (lazily decompressed) dumps."""

    def __init__(self, folder: Path, cache: Path = CACHE) -> None:
        self.folder = folder
        self.name = folder.name
        self.cache = cache                  # where its dumps are decompressed
        self.manifest = json.loads((folder / "case.json").read_text())
        self.arch = str(self.manifest.get("arch", "x86_64"))

    @property
    def cache_dir(self) -> Path:
        """Where its dumps are decompressed: by folder and case, since case names repeat across
        folders of recordings (``captures/basic``, ``captures-10.0/basic``)."""
        return self.cache / self.folder.parent.name / self.name

    @property
    def truth(self) -> list:
        return json.loads((self.folder / self.manifest["truth"]).read_text())["exchanges"]

    def log(self, kind: str) -> Path:
        return self.folder / self.manifest["logs"][kind]

    def has_dump(self, kind: str) -> bool:
        return kind in self.manifest["dumps"]

    def dump(self, kind: str) -> Path:
        name = self.manifest["dumps"][kind]
        if not name.endswith(".zst"):
            return self.folder / name
        out = self.cache_dir / name[:-4]
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + f".{os.getpid()}.part")
            with open(self.folder / name, "rb") as src, open(tmp, "wb") as dst:
                zstandard.ZstdDecompressor().copy_stream(src, dst)
            tmp.rename(out)
        return out


# Said by every test that needs the shared corpus and cannot find it: a fresh clone without
# ../shared still runs the rest green, and the reason tells how to get the skipped part back.
NO_CAPTURES = (f"needs the shared real-QEMU captures, not found in {CAPTURES}: put the shared folder "
               "beside the checkout (../shared/captures) or set VDECODE_CAPTURES=DIR")


@pytest.fixture(scope="session", autouse=True)
def _vdecode_cache(tmp_path_factory):
    """No test writes to the user's cache: ``$VDECODE_CACHE`` is a session folder (subprocesses
    inherit it); tests that look at the cache set their own."""
    folder = tmp_path_factory.mktemp("vdecode-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("VDECODE_CACHE", str(folder))
    yield folder
    mp.undo()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def captures(tmp_path_factory) -> dict[str, Capture]:
    names = capture_names()
    if not names:
        pytest.skip(NO_CAPTURES)
    folder = tmp_path_factory.mktemp("cap")      # short: `info` prints the path in 80 columns
    yield {n: Capture(path, folder) for n, path in capture_folders().items()}
    shutil.rmtree(folder, ignore_errors=True)    # gigabytes: not kept even when a test failed


# Without the corpus one placeholder parameter keeps each test collected, so it is reported as
# skipped with NO_CAPTURES instead of pytest's bare "got empty parameter set".
@pytest.fixture(scope="session", params=capture_names() or [None])
def capture(request, captures) -> Capture:
    return captures[request.param]


@pytest.fixture(scope="module")
def bundle_cache(tmp_path_factory):
    """Bundles are stored compressed: vdecode decompresses them into a scratch cache per module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VDECODE_CACHE", str(tmp_path_factory.mktemp("vdecode-cache")))
    yield
    mp.undo()

"""Session fixtures: the real QEMU 7.2 captures in ``../shared/captures``, decompressed once.

Dumps are stored zstd-compressed; each is decompressed on first use into a cache directory under
the system temp dir (shared with ``fidelity.py``'s cache layout), never into the repository.
"""

from __future__ import annotations

import json
import os
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
CACHE = Path(tempfile.gettempdir()) / "vdecode-captures"


def capture_names() -> list[str]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p.name for p in CAPTURES.iterdir() if (p / "case.json").exists())


class Capture:
    """One recorded case: its manifest, truth, logs and (lazily decompressed) dumps."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = folder.name
        self.manifest = json.loads((folder / "case.json").read_text())

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
        out = CACHE / self.name / name[:-4]
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


@pytest.fixture(scope="session")
def captures() -> dict[str, Capture]:
    names = capture_names()
    if not names:
        pytest.skip(NO_CAPTURES)
    return {n: Capture(CAPTURES / n) for n in names}


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

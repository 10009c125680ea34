"""Loads ``formats/qemu-<version>/`` into a frozen :class:`Profile`; nothing else reads ``formats/``.

A QEMU release changes name tables, error texts, QAPI member lists and struct layouts. All of that
is data under ``formats/``, one complete folder per version, so supporting a new QEMU is a data
change. Files are read on first use and memoised (immutable data only).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdecode.errors import UnsupportedInput

DEFAULT_VERSION = "7.2"


def formats_dir() -> Path:
    """Where ``formats/`` is: beside the package in a checkout or an editable install."""
    here = Path(__file__).resolve().parent
    for cand in (here / "formats", here.parent / "formats"):
        if cand.is_dir():
            return cand
    raise UnsupportedInput(str(here), "the formats/ data folder is missing from this installation")


@functools.lru_cache(maxsize=None)
def _load_json(path: str) -> Any:
    with open(path, "rb") as f:
        return json.load(f)


@dataclass(frozen=True)
class Profile:
    """The data of one QEMU version: ``profile.table("features")`` reads ``features.json``."""

    version: str
    folder: Path

    def table(self, name: str) -> Any:
        """The parsed ``formats/qemu-<version>/<name>.json``."""
        path = self.folder / f"{name}.json"
        if not path.exists():
            raise UnsupportedInput(str(path), f"QEMU {self.version} profile has no {name}.json")
        return _load_json(str(path))

    def files(self, pattern: str) -> list[Path]:
        """Data files of this version matching a glob (e.g. struct layouts ``layout-*.json``)."""
        return sorted(self.folder.glob(pattern))


def available_versions() -> list[str]:
    return sorted(p.name.removeprefix("qemu-") for p in formats_dir().glob("qemu-*") if p.is_dir())


def load_profile(version: str | None = None) -> Profile:
    """The profile for a QEMU version (``"7.2"`` or ``"7.2.0"``); 7.2 when not given.

    A version without its own folder falls back to the nearest older one with the same major
    version, since QEMU's stable releases do not change these tables.

    :raises UnsupportedInput: when no folder fits.
    """
    want = version or DEFAULT_VERSION
    parts = want.split(".")
    key = ".".join(parts[:2])
    folder = formats_dir() / f"qemu-{key}"
    if folder.is_dir():
        return Profile(version=key, folder=folder)
    have = available_versions()

    def num(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    older = [v for v in have if num(v)[:1] == num(key)[:1] and num(v) <= num(key)]
    if older:
        best = max(older, key=num)
        return Profile(version=best, folder=formats_dir() / f"qemu-{best}")
    raise UnsupportedInput("formats/", f"no profile for QEMU {want} (have: {', '.join(have)})")

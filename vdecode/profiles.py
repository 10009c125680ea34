"""Loads ``formats/qemu-<version>/`` into a frozen :class:`Profile`; nothing else reads ``formats/``.

A QEMU release changes name tables, error texts, QAPI member lists and struct layouts. All of that
is data under ``formats/``, one complete folder per version, so supporting a new QEMU is a data
change. Files are read on first use and memoised (immutable data only).
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vdecode.errors import UnsupportedInput
from vdecode.frozen import freeze_deep, record

DEFAULT_VERSION = None      # the newest profile shipped that a version-less input may assume


def formats_dir() -> Path:
    """Where ``formats/`` is.

    Installed (wheel, sdist, pipx, a distribution package): ``vdecode/formats/``, the package data
    pyproject.toml copies from the checkout's top-level ``formats/``. In a checkout or an editable
    install: that top-level folder itself, next to the package, so the one copy people edit is the
    one the tests read."""
    here = Path(__file__).resolve().parent
    for cand in (here / "formats", here.parent / "formats"):
        if cand.is_dir():
            return cand
    raise UnsupportedInput(str(here), "the formats/ data folder is missing from this installation")


@functools.lru_cache(maxsize=None)
def _load_json(path: str) -> Mapping[str, Any]:
    with open(path, "rb") as f:
        return freeze_deep(json.load(f))


@record
class LearnedLabel:
    """A string this QEMU build prints for a table row, learned from a log's replies.

    ``section`` is a key of ``features.json`` (``"transport"``, ``"status"``,
    ``"vhost_user_protocol"``) or ``"devices/<id>"``; ``key`` the row's ``bit`` (its ``mask`` for
    status rows), or ``None`` when the string could not be placed (it is then left out of the
    bits read back, and said so). ``how`` is the evidence: ``"same description"``,
    ``"same name"`` or ``"position"``; ``source`` the log and line it came from."""

    section: str
    key: int | None
    desc: str
    how: str
    source: str
    #: a row the profile's table lacks (the executable's table has it): the key of the row it
    #: follows there (``-1``: the first), so QEMU's table order, which its replies keep, holds
    after: int | None = None


@functools.lru_cache(maxsize=8)
def _relabelled(path: str, learned: tuple[LearnedLabel, ...]) -> Mapping[str, Any]:
    """``features.json`` with the placed labels' rows renamed (the build's own strings)."""
    data = json.loads(json.dumps(_load_json(path)))
    for lab in learned:
        if lab.key is None:
            continue
        head, _, dev = lab.section.partition("/")
        rows = data["devices"][dev]["rows"] if head == "devices" else data[head]
        field = "mask" if head == "status" else "bit"
        for row in rows:
            if row.get(field) == lab.key:
                row["desc"] = lab.desc
                break
        else:
            if lab.after is not None:       # a row this build's table has and the profile lacks
                at = next((i + 1 for i, r in enumerate(rows) if r.get(field) == lab.after),
                          0 if lab.after == -1 else len(rows))
                rows.insert(at, {field: lab.key, "desc": lab.desc})
    return freeze_deep(data)


@record
class Profile:
    """The data of one QEMU version: ``profile.table("features")`` reads ``features.json``."""

    version: str
    folder: Path
    #: why this profile answers (``"the QMP greeting says 10.0.2"``), for ``info`` and the view
    reason: str = ""
    #: set when the version asked for has no profile of its own and a nearest one answers
    warning: str | None = None
    #: strings this build prints differently from the tables, learned from a log (``features``
    #: then answers with them); see :mod:`vdecode.reconstruct.state.labels`
    learned: tuple[LearnedLabel, ...] = ()

    @property
    def unplaced(self) -> frozenset[str]:
        """Learned strings whose bit is unknown: left out when a reply is read back into bits."""
        return frozenset(lab.desc for lab in self.learned if lab.key is None)

    @property
    def release(self) -> str:
        """The QEMU release the profile's tables were made from (``"10.0.2"``)."""
        return str(self.table("devices").get("qemu", self.version))

    def because(self, reason: str) -> Profile:
        """The same profile, saying why it was chosen."""
        return replace(self, reason=reason)

    def table(self, name: str) -> Mapping[str, Any]:
        """The parsed ``formats/qemu-<version>/<name>.json``, immutable (objects as
        :class:`~vdecode.frozen.FrozenDict`, arrays as :class:`~vdecode.frozen.FrozenList`): it is shared by every answer."""
        path = self.folder / f"{name}.json"
        if not path.exists():
            raise UnsupportedInput(str(path), f"QEMU {self.version} profile has no {name}.json")
        if name == "features" and self.learned:
            return _relabelled(str(path), self.learned)
        return _load_json(str(path))

    def files(self, pattern: str) -> list[Path]:
        """Data files of this version matching a glob (e.g. struct layouts ``layout-*.json``)."""
        return sorted(self.folder.glob(pattern))


def _num(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def minor_of(release: str) -> str:
    """A release's ``major.minor`` (``"10.2.2"`` -> ``"10.2"``): a profile folder's name."""
    return ".".join(release.split(".")[:2])


def _minor_key(release: str) -> int:
    """``major * 100 + minor``: how far releases are from each other, for the nearest profile."""
    n = _num(release) + (0, 0)
    return n[0] * 100 + n[1]


def available_versions() -> list[str]:
    """The shipped profiles' versions, oldest first (``["7.2", "10.0"]``)."""
    return sorted((p.name.removeprefix("qemu-") for p in formats_dir().glob("qemu-*") if p.is_dir()),
                  key=_num)


def made_from(version: str) -> tuple[str, ...]:
    """The QEMU releases the shipped profile ``version``'s data were made from
    (``formats/qemu-<version>/made_from.json`` ``releases``: ``("10.2.2", "11.1.3")`` for 11.1,
    whose tables, schema and structures are 10.2.2's source with 11.1.3's recorded changes), else
    its own version."""
    path = formats_dir() / f"qemu-{version}" / "made_from.json"
    if path.is_file():
        return tuple(str(r) for r in _load_json(str(path)).get("releases", ())) or (version,)
    return (version,)


def _distance(want: str, version: str) -> tuple[int, str]:
    """How far the profile ``version`` is from QEMU ``want`` (``major * 100 + minor``): the
    nearest of the releases it was made from, and that release."""
    w = _minor_key(want)
    return min((abs(_minor_key(r) - w), r) for r in made_from(version))


def nearest_version(want: str, have: list[str]) -> tuple[str, bool]:
    """The profile version for QEMU ``want``, and whether it is the release's own.

    A release without a profile gets the profile made from the release nearest it
    (``major * 100 + minor``, over the releases :func:`made_from` names: 10.2 gets 11.1, whose
    data are 10.2.2's source; a tie goes to the newer, whose tables hold the rows a release adds),
    since neighbouring releases share most tables and structures. The executable's own strings,
    when at hand, and a log's are read over these (:mod:`vdecode.sources.qemu_core.strings`,
    :mod:`vdecode.reconstruct.state.labels`); a layout that fails its checks is derived.

    >>> nearest_version("10.1.0", ["7.2", "10.0"])
    ('10.0', False)
    >>> nearest_version("7.2.22", ["7.2", "10.0"])
    ('7.2', True)
    """
    key = minor_of(want)
    if key in have:
        return key, True

    def dist(v: str) -> tuple[int, int]:
        return _distance(key, v)[0], -_minor_key(v)

    return min(have, key=dist), False


def nearness(want: str, release: str) -> str:
    """The profile ``release`` answering for QEMU ``want``, which has none of its own, named with
    the release it was made from when that is not its own: ``"11.1 (made from QEMU 10.2.2's
    source: the same release)"`` for 10.2.2, ``"10.0"`` for 9.2.0."""
    _, src = _distance(want, release)
    if minor_of(src) == release:
        return release
    same = minor_of(src) == minor_of(want)
    return f"{release} (made from QEMU {src}{': the same release' if same else ''})"


def decide_release(version: tuple[int, ...] | None) -> str | None:
    """The shipped profile release that answers for QEMU ``version`` (``(7, 2, 22)`` -> ``"7.2"``,
    the nearest when none is shipped for it), or ``None`` for no version: the one decision of a
    run's release from its inputs' evidence, made by the core reader (or by the session for a
    log's greeting), and passed down from there."""
    if not version:
        return None
    return nearest_version(".".join(map(str, version)), available_versions())[0]


def release_within(low: tuple[int, int] | None, high: tuple[int, int] | None
                   ) -> tuple[str, str] | None:
    """The shipped profile for a QEMU whose release is unknown but bounded by what its core shows
    (``low <= (major, minor) <= high``, either open), and the release it was made from: the one
    made from a release nearest the bounds (inside them: 0; a tie goes to the newer), the same
    rule as :func:`nearest_version` for a known release. ``None`` when none is shipped."""
    have = available_versions()
    if not have:
        return None

    key = _minor_key
    lo = low[0] * 100 + low[1] if low else None
    hi = high[0] * 100 + high[1] if high else None

    def dist(v: str) -> tuple[int, int, str]:
        best = min((max(0, (lo - key(r)) if lo is not None else 0,
                        (key(r) - hi) if hi is not None else 0), r) for r in made_from(v))
        return best[0], -key(v), best[1]

    v = min(have, key=dist)
    return v, dist(v)[2]


def load_profile(version: str | None = None, *, reason: str | None = None) -> Profile:
    """The profile for a QEMU version (``"7.2"`` or ``"10.0.2"``); the newest when not given.

    A version without its own folder is answered by the nearest profile, and the returned
    profile's ``warning`` says so (callers print it; never silently).

    :raises UnsupportedInput: when no profile is shipped at all.
    """
    have = available_versions()
    if not have:
        raise UnsupportedInput(str(formats_dir()), "no qemu-* profile folders")
    if version is None:
        # the newest release that answers every command (a profile may opt out: devices.json
        # assumed_without_version, 11.1 whose live QEMU aborts on x-query-virtio-status)
        v = next((x for x in reversed(have) if _load_json(str(formats_dir() / f"qemu-{x}" /
                  "devices.json")).get("assumed_without_version", True)), have[-1]) \
            if all((formats_dir() / f"qemu-{x}" / "devices.json").is_file() for x in have) \
            else have[-1]
        return Profile(version=v, folder=formats_dir() / f"qemu-{v}",
                       reason=reason or f"no QEMU version in the inputs: the newest profile, {v} "
                                        f"(--qemu VERSION picks another)")
    return release_profile(nearest_version(version, have)[0], version, reason=reason)


def release_profile(release: str, version: str, *, reason: str | None = None) -> Profile:
    """The profile of the shipped ``release`` decided for QEMU ``version``
    (:func:`decide_release`), its ``warning`` saying so when it is not the release's own."""
    exact = minor_of(version) == release
    warning = None if exact else (f"QEMU {version} has no profile (have: "
                                  f"{', '.join(available_versions())}): answering with the "
                                  f"nearest, {nearness(version, release)}")
    return Profile(version=release, folder=formats_dir() / f"qemu-{release}", reason=reason or "",
                   warning=warning)

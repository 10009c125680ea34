"""
The cache folder: decompressed inputs and kept record indexes
-------------------------------------------------------------
Where: ``--cache-dir``, else ``$VDECODE_CACHE``, else ``$XDG_CACHE_HOME/vdecode``, else
``~/.cache/vdecode``. What it holds (``KEY`` is 16 hex digits)::

    KEY.json                    a decompressed input's entry: what it came from, its size, a check
    KEY-NAME                    the decompressed bytes (sparse: runs of zeros are holes)
    KEY-NAME.flatindex.npz      a large flattened kdump's record index (sources/flattened.py)
    .KEY-….part                 being written; never read, renamed into place when whole

**One copy per compressed input.** A decompressed entry's ``KEY`` is a fingerprint of the
compressed file's *content*, never its path or mtime, so ``touch``, a rename or a copy elsewhere
find the same entry. The fingerprint is cheap because every answer on a cached input pays it: the
file's size and a SHA-256 of its first and last 64 KiB and of 16 blocks of 4 KiB spread evenly
between (192 KiB read whatever the size; a file of up to 256 KiB is hashed whole). Why that is
enough: the last 64 KiB hold each format's check of the *whole decompressed content* (gzip's
CRC-32 and length, the XXH64 content checksum the zstd tool writes at a frame's end, xz's block
check and index), and the first 64 KiB hold the dump's own headers (an ELF dump's or core's notes
with the vCPU or thread registers, a kdump header's timestamp), which differ between any two
dumps. A different input with the same fingerprint would need an in-place edit that keeps the
compressed size and misses both ends and every sample; ``vdecode cache clear --input FILE`` drops
an entry by hand. A full hash of a 2 GiB ``.zst`` would cost seconds per answer, not about one
millisecond.

**An entry is trusted only when it checks out.** ``KEY.json`` is written last (after the data is
renamed into place) and records the data's size and a SHA-256 of sampled blocks of it; each use
checks both, so a truncated or overwritten entry is removed and decompressed again, never read.
Concurrent writers each write their own ``.part`` and rename it: both copies are the same bytes.

**A size cap, least recently used first.** Each use sets the entry's ``KEY.json`` mtime (the index
file's for a record index), which is "last used". After an entry is added the oldest-used entries
are removed until the folder's *on-disk* size (sparse holes do not count) is under the cap:
``$VDECODE_CACHE_MAX`` (``20G``, ``500M``, a byte count, ``none`` for no cap), default
:data:`DEFAULT_MAX`. The entry being used is never removed; one another process is reading stays
readable (an unlinked file lives on while it is open or mapped), only its disk space comes back
later. Unfinished ``.part`` files untouched for an hour are leftovers of killed runs and go too.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from vdecode.errors import InputError
from vdecode.frozen import record

__all__ = ("DEFAULT_MAX", "Entry", "cache_cap", "clear", "default_cache_dir", "entries", "evict",
           "fingerprint", "lookup", "mark_used", "parse_age", "parse_size", "store")

DEFAULT_MAX = 20 << 30          # 20 GiB: a few dozen compressed dumps' worth, beside any home folder
ENV_DIR, ENV_MAX = "VDECODE_CACHE", "VDECODE_CACHE_MAX"
FINGERPRINT_VERSION = 1
WHOLE = 256 << 10               # files up to this size are hashed whole
EDGE = 64 << 10                 # hashed at each end of a larger file
SAMPLES, SAMPLE = 16, 4 << 10   # evenly spaced blocks between the ends
STALE_PART = 3600.0             # seconds without a write after which a .part is a leftover
_NAME = re.compile(r"^\.?([0-9a-f]{16})(?:\.json$|-|\.\d+\.json\.part$)")


def default_cache_dir() -> Path:
    """``$VDECODE_CACHE``, else ``$XDG_CACHE_HOME/vdecode``, else ``~/.cache/vdecode``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vdecode"


def parse_size(text: str) -> int | None:
    """``"20G"``, ``"500MiB"``, ``"1048576"`` -> bytes (powers of 1024); ``"none"`` -> ``None``."""
    t = text.strip().lower()
    if t in ("none", "off", "unlimited"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", t)
    if not m:
        raise ValueError(f"not a size: '{text}' (e.g. 20G, 500M, 1048576 or none)")
    return int(float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2) or " "))))


def parse_age(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` (or plain seconds) -> seconds.

    >>> parse_age("7d"), parse_age("12h"), parse_age("90")
    (604800.0, 43200.0, 90.0)
    """
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", text.strip().lower())
    if not m:
        raise ValueError(f"not a duration: '{text}' (e.g. 7d, 12h, 30m, 90s)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def cache_cap() -> int | None:
    """The cap in bytes on disk (``$VDECODE_CACHE_MAX``, default :data:`DEFAULT_MAX`); ``None``: none.

    :raises InputError: when the variable is not a size.
    """
    text = os.environ.get(ENV_MAX)
    if not text:
        return DEFAULT_MAX
    try:
        return parse_size(text)
    except ValueError as err:
        raise InputError(f"${ENV_MAX}", str(err)) from None


def _sampled(f, size: int, edge: int) -> bytes:
    """SHA-256 of ``f``'s size, ``edge`` bytes at each end and :data:`SAMPLES` blocks between."""
    import hashlib          # here: loading OpenSSL costs milliseconds an answer on a bundle skips

    h = hashlib.sha256(f"{size}\0".encode())
    if size <= 2 * edge + SAMPLES * SAMPLE:
        f.seek(0)
        while chunk := f.read(1 << 20):
            h.update(chunk)
        return h.digest()
    spots = [(0, edge), (size - edge, edge)]
    step = (size - 2 * edge - SAMPLE) // (SAMPLES - 1)
    spots[1:1] = [(edge + i * step, SAMPLE) for i in range(SAMPLES)]
    for at, n in spots:
        f.seek(at)
        h.update(f.read(n))
    return h.digest()


def fingerprint(path: str | os.PathLike) -> str:
    """The cache key of a compressed file: 16 hex digits from its content only (see above)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        edge = WHOLE if size <= WHOLE else EDGE
        digest = _sampled(f, size, edge)
    import hashlib

    return hashlib.sha256(b"vdecode-cache %d\0" % FINGERPRINT_VERSION + digest).hexdigest()[:16]


def _check_of(path: Path, size: int) -> str:
    """The sampled check of a decompressed file (64 KiB ends): catches truncation and overwrites."""
    with open(path, "rb") as f:
        return _sampled(f, size, EDGE).hex()[:32]


def lookup(cache_dir: str | os.PathLike, key: str) -> Path | None:
    """The decompressed file of ``key`` if its entry is whole and checks out (then marked used);
    an entry that does not check out is removed, and ``None`` returned as for a missing one."""
    folder = Path(cache_dir)
    meta_path = folder / f"{key}.json"
    try:
        text = meta_path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None                       # not made yet (or the folder is not there)
    except OSError:
        return None                       # unreadable: decompressing again will say why
    try:
        meta = json.loads(text)
        data = folder / meta["file"]
        size = int(meta["size"])
        if data.name.startswith(f"{key}-") and "/" not in meta["file"] \
                and os.stat(data).st_size == size and _check_of(data, size) == meta["check"]:
            mark_used(meta_path)
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        _remove_entry(folder, key)        # damaged, truncated or half-removed: never trusted
    except (OSError, InputError):
        pass                              # then the new copy replaces it
    return None


def store(cache_dir: str | os.PathLike, key: str, part: str | os.PathLike, name: str, *,
          source: str | os.PathLike, kind: str) -> Path:
    """Rename the finished ``part`` to ``KEY-name`` and write its ``KEY.json``, last; then keep
    the folder under the cap (this entry excepted). Returns the data file."""
    folder = Path(cache_dir)
    data = folder / f"{key}-{name}"
    size = os.stat(part).st_size
    meta = {"file": data.name, "source": os.path.basename(os.fspath(source)),
            "source_size": os.stat(source).st_size, "kind": kind, "size": size,
            "check": _check_of(Path(part), size), "created": round(time.time())}
    os.replace(part, data)
    mpart = folder / f".{key}.{os.getpid()}.json.part"
    mpart.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(mpart, folder / f"{key}.json")
    evict(folder, cache_cap(), keep={key})
    return data


def mark_used(path: str | os.PathLike) -> None:
    """Set ``path``'s times to now ("last used"); a read-only cache stays as it is."""
    try:
        os.utime(path)
    except OSError:
        pass


@record
class Entry:
    """One thing in the cache folder, as ``vdecode cache list`` shows it."""

    key: str
    kind: str               # "decompressed", "index", "unindexed" (data without its entry), "unfinished"
    source: str             # the input's file name as it was when the entry was made
    files: tuple[str, ...]
    on_disk: int            # bytes of disk used (sparse holes not counted)
    apparent: int           # bytes as ls -l shows them
    last_used: float        # epoch seconds


def entries(cache_dir: str | os.PathLike) -> list[Entry]:
    """What the folder holds, least recently used first (other files in it are not ours: left out)."""
    folder = Path(cache_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise InputError(str(folder), f"cannot read the cache folder: {err.strerror or err}") from None
    groups: dict[tuple[str, str], list[tuple[str, os.stat_result]]] = {}
    for name in names:
        m = _NAME.match(name)
        if not m:
            continue
        try:
            st = os.lstat(folder / name)
        except FileNotFoundError:
            continue                      # removed by another process meanwhile
        if name.startswith("."):
            group = (m.group(1), "unfinished")
        elif name.endswith(".flatindex.npz"):
            group = (m.group(1), "index:" + name)
        else:
            group = (m.group(1), "entry")
        groups.setdefault(group, []).append((name, st))
    out = []
    for (key, what), files in groups.items():
        names_ = tuple(sorted(n for n, _ in files))
        on_disk = sum(st.st_blocks * 512 for _, st in files)
        apparent = sum(st.st_size for _, st in files)
        newest = max(st.st_mtime for _, st in files)
        if what == "unfinished":
            kind, source = "unfinished", names_[0]
        elif what.startswith("index:"):
            kind, source = "index", what[6 + 17:-len(".flatindex.npz")]
        else:
            meta = dict(files).get(f"{key}.json")
            kind, source, last = "unindexed", "", newest
            if meta is not None:
                last = meta.st_mtime
                try:
                    source = str(json.loads((folder / f"{key}.json").read_text())["source"])
                    kind = "decompressed"
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            if not source:
                source = next((n[17:] for n in names_ if not n.endswith(".json")), names_[0])
            out.append(Entry(key, kind, source, names_, on_disk, apparent, last))
            continue
        out.append(Entry(key, kind, source, names_, on_disk, apparent, newest))
    out.sort(key=lambda e: (e.last_used, e.key, e.files))
    return out


def _remove_files(folder: Path, entry: Entry) -> None:
    for name in entry.files:
        try:
            os.unlink(folder / name)
        except FileNotFoundError:
            pass                          # another process removed it first


def _remove_entry(folder: Path, key: str) -> None:
    for e in entries(folder):
        if e.key == key and e.kind in ("decompressed", "unindexed"):
            _remove_files(folder, e)


def evict(cache_dir: str | os.PathLike, cap: int | None, keep: set[str] = frozenset()) -> list[Entry]:
    """Remove least recently used entries until the folder's on-disk size is at most ``cap``
    (entries whose key is in ``keep`` stay whatever their size), and stale ``.part`` files.
    Returns what was removed."""
    folder = Path(cache_dir)
    now, removed = time.time(), []
    found = entries(folder)
    for e in found:
        if e.kind == "unfinished" and now - e.last_used > STALE_PART:
            _remove_files(folder, e)
            removed.append(e)
    if cap is None:
        return removed
    total = sum(e.on_disk for e in found if e not in removed)
    for e in found:
        if total <= cap:
            break
        if e.kind == "unfinished" or e.key in keep or e in removed:
            continue
        _remove_files(folder, e)
        removed.append(e)
        total -= e.on_disk
    return removed


def clear(cache_dir: str | os.PathLike, *, older_than: float | None = None,
          keys: set[str] | None = None) -> list[Entry]:
    """Remove entries: all, or those last used more than ``older_than`` seconds ago, or those of
    ``keys``. Unfinished files are removed only when stale (a run may be writing them now)."""
    folder = Path(cache_dir)
    now, removed = time.time(), []
    for e in entries(folder):
        if e.kind == "unfinished" and now - e.last_used <= STALE_PART:
            continue
        if older_than is not None and now - e.last_used <= older_than:
            continue
        if keys is not None and e.key not in keys:
            continue
        _remove_files(folder, e)
        removed.append(e)
    return removed

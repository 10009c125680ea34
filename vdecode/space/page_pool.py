"""
Decoding many kdump pages on every core
---------------------------------------
A bulk read of a kdump (:meth:`~vdecode.space.paged.PagedSpace.read_pages` of thousands of pages:
carving all of RAM, writing a bundle) copies raw pages and inflates zlib pages one after the other
(:func:`decode_fast`). The pages are independent, but libdeflate's and ISA-L's Python bindings
hold the GIL while they inflate, so threads would take turns: when one read holds at least
:data:`POOL_MIN_PAGES` compressed pages and more than one core is usable
(:func:`vdecode.cores.idle_cores`), the pages are split across a process pool
(``concurrent.futures``; its workers forked once, while the reader runs one thread).
Each worker maps the dump file itself and writes its pages into one shared buffer (a file in
``/dev/shm`` whose name is removed before the read returns; the reader's mapping of it is the
result, so nothing is copied); what it cannot decode fast (a damaged page, a page a
cut dump lacks) it hands back, and the reader decodes those itself, in order, so the error is the
one a one-core read gives. A read for one question (a few pages) never starts the pool, and a
pool that cannot start (no ``/dev/shm``, a broken worker) leaves the read to this process.

This module imports nothing heavy: the workers import it.
"""

from __future__ import annotations

import atexit
import mmap
import os
import threading
from typing import TYPE_CHECKING

from vdecode.cores import idle_cores
from vdecode.space.inflate import inflate_block

if TYPE_CHECKING:       # the pool's modules load when a pool starts, not for a one-page answer
    from concurrent.futures import ProcessPoolExecutor

__all__ = ("POOL_MIN_PAGES", "decode_pages")

POOL_MIN_PAGES = 2048           # compressed pages in one read before other processes help
SHARED = "/dev/shm"
ANONYMOUS_FROM = 32 << 20       # results from this size (glibc maps such blocks anew each time)

_pool: ProcessPoolExecutor | None = None
_pool_workers = 0


def decode_fast(out, mem, idx: list[int], at: list[int], sizes: list[int], flags: list[int],
                bs: int, zlib_flag: int, first: int = 0) -> list[int]:
    """Write page ``idx[k]`` (stored at file offset ``at[k]``) into ``out`` at
    ``(idx[k] - first) * bs``: raw pages copied, zlib pages that are one whole block inflated.
    Returns the indices left for the caller's careful decoder."""
    left = []
    for i, x, s, f in zip(idx, at, sizes, flags):
        o = (i - first) * bs
        if f == 0 and s == bs:
            out[o:o + bs] = mem[x:x + bs]
            continue
        if f == zlib_flag and s <= bs:
            page = inflate_block(mem[x:x + s], bs)
            if page is not None:
                out[o:o + bs] = page
                continue
        left.append(i)
    return left


def decode_pages(n: int, mem, path: str, idx: list[int], at: list[int], sizes: list[int],
                 flags: list[int], bs: int, zlib_flag: int,
                 workers: int | None = None) -> tuple[bytearray | memoryview, list[int]]:
    """:func:`decode_fast` over one read into a new zero-filled buffer of ``n`` bytes, on every
    usable core when it holds enough compressed pages (``workers``: at most this many processes;
    default :func:`~vdecode.cores.idle_cores`). Returns the buffer (a ``bytearray``, or a writable view of the
    shared mapping the workers wrote) and the indices left for the careful decoder."""
    workers = idle_cores() if workers is None else workers
    compressed = len(flags) - flags.count(0)
    if workers > 1 and compressed >= POOL_MIN_PAGES and os.path.isdir(SHARED):
        try:
            st = os.stat(path)
        except OSError:
            st = None
        # the workers map the file by name: the key tells them when it is another file
        key = st and (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        done = key and _in_pool(n, key, idx, at, sizes, flags, bs, zlib_flag, workers)
        if done:
            return done
    # a big result in fresh anonymous memory: the pages left as zeros are never touched (no
    # memset, no page faults), where a bytearray this size would be zeroed and faulted in whole
    out = memoryview(mmap.mmap(-1, n)) if n >= ANONYMOUS_FROM else bytearray(n)
    return out, decode_fast(out, mem, idx, at, sizes, flags, bs, zlib_flag)


def _executor(workers: int) -> ProcessPoolExecutor | None:
    """The pool, started on first use by forking this process while it runs one thread (no lock
    another thread holds is copied; nothing is imported again, no script run again); ``None``
    when that is not possible now (then this process decodes)."""
    global _pool, _pool_workers
    if _pool is not None and _pool_workers == workers:
        return _pool
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import current_process, get_all_start_methods, get_context
    # a pool worker (triage's) may not start processes of its own: it decodes alone
    if threading.active_count() > 1 or "fork" not in get_all_start_methods() \
            or current_process().daemon:
        return None
    if _pool is not None:
        _pool.shutdown(wait=False)
        _pool = None
    try:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"))
        # start every worker now, while this is the only thread (later submits fork nothing)
        for f in [pool.submit(os.getpid) for _ in range(workers)]:
            f.result()
    except Exception:       # noqa: BLE001 - no processes to be had: this process decodes
        return None
    if _pool_workers == 0:
        atexit.register(_shutdown)      # before the interpreter takes its modules apart
    _pool, _pool_workers = pool, workers
    return _pool


def _shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


def _in_pool(n: int, key: tuple, idx, at, sizes, flags, bs: int, zlib_flag: int,
             workers: int) -> tuple[memoryview, list[int]] | None:
    global _pool
    pool = _executor(workers)
    if pool is None:
        return None
    shared = os.path.join(SHARED, f"vdecode-pages-{os.getpid()}-{os.urandom(6).hex()}")
    try:
        fd = os.open(shared, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return None
    try:
        os.ftruncate(fd, n)
        # two parts a worker, so one slow part does not leave a core idle at the end
        step = -(-len(idx) // (2 * workers))
        futures = [pool.submit(_worker, key, shared, n, bs, zlib_flag, idx[k:k + step],
                               at[k:k + step], sizes[k:k + step], flags[k:k + step])
                   for k in range(0, len(idx), step)]
        left = [i for f in futures for i in f.result()]
        # the name goes below; the mapping stays while the view (or a slice of it) is used
        return memoryview(mmap.mmap(fd, n)), left
    except Exception:       # noqa: BLE001 - a broken pool: this process decodes it all
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        return None
    finally:
        os.close(fd)
        os.unlink(shared)


_files: dict[tuple, memoryview] = {}


def _worker(key: tuple, shared: str, n: int, bs: int, zlib_flag: int, idx, at, sizes,
            flags) -> list[int]:
    """In a pool process: decode these pages of the file ``key`` names into the shared buffer."""
    mem = _files.get(key)
    if mem is None:
        if len(_files) >= 4:
            _files.clear()
        with open(key[0], "rb") as f:
            mem = _files[key] = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    fd = os.open(shared, os.O_RDWR)
    try:
        out = mmap.mmap(fd, n)
    finally:
        os.close(fd)
    try:
        return decode_fast(out, mem, idx, at, sizes, flags, bs, zlib_flag)
    finally:
        out.close()
        # the dump's pages were read once: let go of them (resident memory stays small)
        mem.obj.madvise(mmap.MADV_DONTNEED) if hasattr(mmap, "MADV_DONTNEED") else None

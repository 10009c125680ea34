"""Run the jobs: local processes (``concurrent.futures.ProcessPoolExecutor``) or a Dask cluster
(``distributed.Client``). Both run :func:`~vdecode.triage.record.triage_vm` on the same jobs and
the records are sorted the same way, so the two give equal lists.

A worker holds one VM's inputs at a time: dumps are memory-mapped read-only and logs are read
latest-only (``docs/log.md``), so a worker's memory follows the size of the VM's virtio state,
not of its files.

One VM's bulk work is split too: carving a guest RAM of :data:`SPLIT_CARVE_BYTES` or more (a
driver reset, queues the log never asked) goes out as chunks to every worker of the same pool or
cluster, and the VM's record is built with their scans, so a fleet with one huge dump does not
wait for one worker to carve it alone.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from functools import partial
from typing import Any

from vdecode.cores import usable_cores
from vdecode.errors import SetupError
from vdecode.triage.discover import VmJob, check_has_dumps, discover
from vdecode.triage.record import failed_record, preload, triage_part, triage_step, triage_vm

__all__ = ("run_triage", "run_local", "run_dask", "default_workers", "record_order",
           "SCHEDULER_TIMEOUT", "SPLIT_CARVE_BYTES")

#: seconds to wait for a Dask scheduler to answer (``--timeout``); distributed's own default
#: (30 s) is long for a mistyped address, and a live scheduler answers in milliseconds
SCHEDULER_TIMEOUT = 10.0

#: guest RAM (bytes) from which one VM's carving is split into chunks run on every worker
SPLIT_CARVE_BYTES = 1 << 30

Progress = Callable[[int, int], None]


def default_workers() -> int:
    """The cores this process may use (:func:`vdecode.cores.usable_cores`)."""
    return usable_cores()


def record_order(record: dict[str, Any]) -> tuple:
    return (record["vm"], record["inputs"]["dump"] or "", record["inputs"]["logs"],
            [e["input"] or "" for e in record["errors"]])


def run_local(jobs: list[VmJob], workers: int, progress: Progress | None = None, *,
              split_from: int | None = None) -> list[dict]:
    """The records of ``jobs`` over ``workers`` local processes (``1``: in this process).

    :param split_from: RAM (bytes) from which one VM's carving is spread over the workers
        (default :data:`SPLIT_CARVE_BYTES`)."""
    split_from = SPLIT_CARVE_BYTES if split_from is None else split_from
    big = any(_size(job) >= split_from for job in jobs)
    if workers <= 1 or not jobs or (len(jobs) == 1 and not big):
        records = []
        for i, job in enumerate(jobs, 1):
            records.append(triage_vm(job))
            if progress:
                progress(i, len(jobs))
        return sorted(records, key=record_order)
    preload()       # forked workers start with the modules a record needs, not each importing them
    # No max_tasks_per_child: CPython 3.11's pool can hang replacing a retired worker
    # (seen here with 150 jobs and 64 tasks per child).
    with ProcessPoolExecutor(max_workers=workers if big else min(workers, len(jobs))) as pool:
        records = _drive(pool.submit, _Completed(), jobs, workers, split_from, progress)
    return sorted(records, key=record_order)


class _Completed:
    """``concurrent.futures.as_completed`` that takes more futures while it runs (as
    ``distributed.as_completed`` does)."""

    def __init__(self) -> None:
        self.pending: set[Future] = set()

    def add(self, future: Future) -> None:
        self.pending.add(future)

    def __iter__(self):
        while self.pending:
            done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            for f in done:
                self.pending.discard(f)
                yield f


def _drive(submit: Callable, completed, jobs: list[VmJob], workers: int, split_from: int | None,
           progress: Progress | None) -> list[dict]:
    """Run every job through ``submit`` (a pool's or a cluster's), biggest first; a job whose
    carving is big comes back asking for it (:func:`triage_step`), its chunks go out as
    :func:`triage_part` tasks over every worker, and the job runs again with their scans, so
    the fleet does not wait on one worker carving one huge dump. The records are the same as
    one process gives: the same chunks are scanned and merged in the same order."""
    records: list[dict] = []
    owner: dict[Any, tuple] = {}
    splits: dict[int, dict[str, Any]] = {}
    keys = itertools.count()

    def start(job: VmJob, prepared: dict, split: int | None) -> None:
        fut = submit(triage_step, job, prepared, split)
        owner[fut] = ("vm", job, prepared, split)
        completed.add(fut)

    for job in sorted(jobs, key=lambda j: (-_size(j), j.vm)):     # big first: better balance
        start(job, {}, split_from)
    for fut in completed:
        what = owner.pop(fut)
        if what[0] == "vm":
            _, job, prepared, split = what
            try:
                out = fut.result()
            except Exception as err:                # noqa: BLE001 - a worker died (BrokenProcessPool, KilledWorker)
                out = failed_record(job, err)
            if "split" in out:
                path, little, chunks = out["split"]
                if (path, little) in prepared:       # asked again for what it has: carve there
                    start(job, prepared, None)
                    continue
                k = max(1, min(chunks, 2 * workers))
                bounds = [chunks * i // k for i in range(k + 1)]
                key = next(keys)
                splits[key] = {"job": job, "prepared": prepared, "want": (path, little),
                               "parts": [None] * k, "left": k, "failed": False}
                for i in range(k):
                    part = submit(triage_part, path, job.cache_dir, little, bounds[i], bounds[i + 1])
                    owner[part] = ("part", key, i)
                    completed.add(part)
                continue
            records.append(out)
            if progress:
                progress(len(records), len(jobs))
        else:
            _, key, i = what
            sp = splits[key]
            try:
                sp["parts"][i] = fut.result()
            except Exception:                       # noqa: BLE001 - the job carves it itself
                sp["failed"] = True
            sp["left"] -= 1
            if not sp["left"]:
                del splits[key]
                if sp["failed"]:
                    start(sp["job"], sp["prepared"], None)
                else:
                    scans = [scan for part in sp["parts"] for scan in part]
                    start(sp["job"], {**sp["prepared"], sp["want"]: scans}, split_from)
    return records


def _distributed(address: str | Any):
    """The ``distributed`` module, or one :class:`SetupError` line saying how to install it."""
    try:
        import distributed
    except ImportError as err:
        raise SetupError(f"--scheduler {address}",
                         f"Dask is not installed ({err}): pip install 'vdecode[dask]'") from None
    return distributed


def _connect(distributed, address: str, timeout: float):
    """A client of the scheduler at ``address``, or one :class:`SetupError` line when it does not
    answer within ``timeout`` seconds (distributed raises ``OSError``/``TimeoutError`` after
    retrying, with its own multi-line text)."""
    try:
        return distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SetupError(f"--scheduler {address}", f"no Dask scheduler answered within "
                                                   f"{timeout:g} s ({first})") from None
    except (ValueError, TypeError) as err:           # not an address distributed can parse
        raise SetupError(f"--scheduler {address}", f"not a Dask scheduler address: {err}") from None


def run_dask(jobs: list[VmJob], address: str | Any, progress: Progress | None = None, *,
             timeout: float = SCHEDULER_TIMEOUT) -> list[dict]:
    """The records of ``jobs`` on the Dask cluster at ``address`` (a scheduler address, or a
    ``distributed.Client`` / ``LocalCluster``); the inputs must be at the same paths on the
    workers (shared storage).

    :param timeout: seconds to wait for the scheduler to answer.
    :raises SetupError: without the ``vdecode[dask]`` extra, or when no scheduler answers.
    """
    distributed = _distributed(address)
    Client = distributed.Client

    own = not isinstance(address, Client)
    client = _connect(distributed, address, timeout) if own else address
    try:
        workers = max(1, sum(client.nthreads().values()))
        submit = partial(client.submit, pure=False)
        records = _drive(submit, distributed.as_completed(), jobs, workers, SPLIT_CARVE_BYTES,
                         progress)
    finally:
        if own:
            client.close()
    return sorted(records, key=record_order)


def _size(job: VmJob) -> int:
    """Bytes of the job's inputs."""
    total = 0
    for p in [d for d, _ in job.dumps] + list(job.logs):
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total


def run_triage(paths: list[str], *, workers: int | None = None, scheduler: str | None = None,
               cache_dir: str | None = None, progress: Progress | None = None,
               timeout: float = SCHEDULER_TIMEOUT) -> list[dict]:
    """Discover the VMs under ``paths`` and build their records, sorted by VM name.

    :param workers: local processes (default :func:`default_workers`); ignored with ``scheduler``.
    :param scheduler: a Dask scheduler address (``tcp://host:8786``).
    :param cache_dir: where compressed dumps are decompressed (must be shared with a cluster).
    :param timeout: seconds to wait for the scheduler to answer.
    :raises InputError: ``paths`` hold no dump, QEMU core or bundle (an empty folder).
    :raises SetupError: ``scheduler`` without the Dask extra, or no scheduler answering there.
    """
    if scheduler:
        _distributed(scheduler)                      # before walking a fleet for nothing
    jobs = discover(paths, cache_dir=cache_dir)
    check_has_dumps(paths, jobs)
    if scheduler:
        return run_dask(jobs, scheduler, progress, timeout=timeout)
    return run_local(jobs, workers or default_workers(), progress)

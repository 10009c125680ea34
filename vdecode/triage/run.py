"""Run the jobs: local processes (``concurrent.futures.ProcessPoolExecutor``) or a Dask cluster
(``distributed.Client``). Both run :func:`~vdecode.triage.record.triage_vm` on the same jobs and
the records are sorted the same way, so the two give equal lists.

A worker holds one VM's inputs at a time: dumps are memory-mapped read-only and logs are read
latest-only (``docs/log.md``), so a worker's memory follows the size of the VM's virtio state,
not of its files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from vdecode.errors import SetupError
from vdecode.triage.discover import VmJob, check_has_dumps, discover
from vdecode.triage.record import failed_record, triage_vm

__all__ = ("run_triage", "run_local", "run_dask", "default_workers", "record_order",
           "SCHEDULER_TIMEOUT")

#: seconds to wait for a Dask scheduler to answer (``--timeout``); distributed's own default
#: (30 s) is long for a mistyped address, and a live scheduler answers in milliseconds
SCHEDULER_TIMEOUT = 10.0

Progress = Callable[[int, int], None]


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                          # not Linux
        return os.cpu_count() or 1


def record_order(record: dict[str, Any]) -> tuple:
    return (record["vm"], record["inputs"]["dump"] or "", record["inputs"]["logs"],
            [e["input"] or "" for e in record["errors"]])


def run_local(jobs: list[VmJob], workers: int, progress: Progress | None = None) -> list[dict]:
    """The records of ``jobs`` over ``workers`` local processes (``1``: in this process)."""
    records = []
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs, 1):
            records.append(triage_vm(job))
            if progress:
                progress(i, len(jobs))
        return sorted(records, key=record_order)
    # No max_tasks_per_child: CPython 3.11's pool can hang replacing a retired worker
    # (seen here with 150 jobs and 64 tasks per child).
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = {pool.submit(triage_vm, job): job for job in _largest_first(jobs)}
        for i, fut in enumerate(as_completed(futures), 1):
            try:
                records.append(fut.result())
            except Exception as err:                # noqa: BLE001 - a worker died (BrokenProcessPool)
                records.append(failed_record(futures[fut], err))
            if progress:
                progress(i, len(jobs))
    return sorted(records, key=record_order)


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
    Client, dask_completed = distributed.Client, distributed.as_completed

    own = not isinstance(address, Client)
    client = _connect(distributed, address, timeout) if own else address
    try:
        ordered = _largest_first(jobs)
        futures = client.map(triage_vm, ordered, pure=False)
        job_of = {f.key: j for f, j in zip(futures, ordered)}
        records = []
        for i, fut in enumerate(dask_completed(futures), 1):
            try:
                records.append(fut.result())
            except Exception as err:                # noqa: BLE001 - a worker died (KilledWorker)
                records.append(failed_record(job_of[fut.key], err))
            if progress:
                progress(i, len(jobs))
    finally:
        if own:
            client.close()
    return sorted(records, key=record_order)


def _largest_first(jobs: Iterable[VmJob]) -> list[VmJob]:
    """Big inputs first, so the last job to finish is a small one (better balance)."""
    def size(job: VmJob) -> int:
        total = 0
        for p in [d for d, _ in job.dumps] + list(job.logs):
            try:
                total += os.path.getsize(p)
            except OSError:
                pass
        return total
    return sorted(jobs, key=lambda j: (-size(j), j.vm))


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

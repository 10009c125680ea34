"""Which way a split queue's 16-bit indices moved between a QMP log and the dump, and why.

``avail->idx`` and ``used->idx`` are free-running 16-bit counters (virtio 1.2 2.7.6, 2.7.8): a
used idx of 30005 in the log and 4474 in the dump reads as 40005 completions forward (past 65535)
as well as 25531 back. Arithmetic modulo 65536 cannot choose; what the inputs hold can:

* the two counters are tied: at any instant ``avail - used`` is what is outstanding, at most the
  ring size, so the avail idx moved exactly as far as the used idx plus the change in what is
  outstanding. An avail idx behind that (or behind the used idx itself) went back: the device
  cannot complete requests never made available;
* QEMU's used idx only goes back when the device is reset (``virtio_reset`` zeroes it), and a reset
  leaves signs: the driver re-initialises the queue (Linux allocates new rings: the caller reports
  ``rings-relocated``), and a ring allocated since holds never-written used slots past the used
  idx;
* the pace the log saw (:class:`Pace`: several samples of the used idx over time) and the time
  from the log to the stop (a ``STOP`` event after it) predict how many completions there were.

:func:`judge_motion` weighs these and gives one :class:`Motion`: ``forward``, ``back`` (the driver
moved its avail idx back), ``reset`` (both counters restarted) or ``ambiguous`` (the evidence
disagrees; both readings are given), each with the sentences it rests on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vdecode.frozen import record
from vdecode.sources.qmp_log.knowledge import LogKnowledge

__all__ = ("Pace", "Motion", "judge_motion", "log_pace", "WRAP", "HALF")

WRAP = 0x10000
HALF = 0x8000
# A predicted count within this factor of a reading supports it; under 1/FAR of it refutes it.
NEAR = 2.0
FAR = 4.0


@record
class Pace:
    """How fast a queue's used idx moved while the log watched it.

    :param rate: completions per second between the first and the last sample.
    :param samples: how many replies (same rings) the rate rests on.
    :param first: time of the first sample; :param last: of the last.
    :param stop: when the VM stopped after the last sample (a ``STOP`` event), if the log says.
    """

    rate: float
    samples: int
    first: float
    last: float
    stop: float | None = None


@record
class Motion:
    """One queue's index motion between the log and the dump.

    :param verdict: ``"forward"``, ``"back"``, ``"reset"`` or ``"ambiguous"``.
    :param forward: completions in the forward reading (``used`` minus the log's, modulo 65536).
    :param back: how far the index went back in the backward reading.
    :param index: ``"used"`` or ``"avail"``: the counter the readings are about.
    :param why: the evidence, one sentence each (for the finding's evidence).
    """

    verdict: str
    forward: int
    back: int
    index: str
    why: tuple[str, ...]

    def wrapped(self, log_idx: int) -> bool:
        """Whether the forward reading passes 65535 from the log's ``log_idx``."""
        return self.verdict == "forward" and log_idx + self.forward >= WRAP

    def evidence(self) -> dict[str, Any]:
        return {"reading": self.verdict, "forward_reading": self.forward,
                "back_reading": self.back, "index": self.index, "why": list(self.why)}


def _fresh_slots(used_ring: np.ndarray | None, used: int, num: int) -> bool:
    """Whether the used ring looks allocated since the log: slots from ``used`` to the end never
    written (id and len 0) while the slots before hold entries. After a forward run of at least
    ``num`` completions every slot has been written."""
    if used_ring is None or not 0 < used < num or len(used_ring) < num:
        return False
    ids, lens = used_ring["id"].astype(np.int64), used_ring["len"].astype(np.int64)
    rest = (ids[used:num] == 0) & (lens[used:num] == 0)
    before = (ids[:used] != 0) | (lens[:used] != 0)
    return bool(rest.all() and before.any())


def _predicted(pace: Pace | None, since: float | None) -> tuple[float | None, str]:
    """Completions the log's pace predicts from ``since`` to the stop, and the sentence saying so."""
    # an idle queue in the log says nothing of a burst after it
    if pace is None or pace.samples < 2 or pace.rate <= 0 or pace.stop is None or since is None \
            or pace.stop < since:
        return None, ""
    n = pace.rate * (pace.stop - since)
    return n, (f"the log saw {pace.rate:.0f} completion(s)/s over {pace.last - pace.first:.1f} s "
               f"({pace.samples} samples); {pace.stop - since:.1f} s from the log to the stop "
               f"predict about {n:.0f}")


def _nearest_forward(fwd: int, n: float) -> tuple[int, bool]:
    """The forward count ``fwd + 65536 k`` nearest the predicted ``n``, and whether ``n`` is
    within a factor :data:`NEAR` of it."""
    c = fwd + WRAP * max(0, round((n - fwd) / WRAP))
    return c, c / NEAR <= n <= c * NEAR


def judge_motion(*, log_avail: int | None, log_used: int, avail: int, used: int, num: int,
                 used_ring: np.ndarray | None = None, pace: Pace | None = None,
                 log_time: float | None = None) -> Motion | None:
    """How the indices of one queue (same rings as in the log) moved; ``None`` when plainly forward
    (fewer than 32768 completions, the avail idx consistent with them, and no pace saying whole
    cycles of 65536 passed unseen).

    :param log_avail: the log's ``shadow_avail_idx`` (``None`` if it did not say).
    :param log_used: the log's used idx; :param avail: :param used: the dump's (guest memory).
    :param used_ring: the dump's used ring entries (``id``, ``len``).
    :param pace: the pace of the used idx in the log; :param log_time: the logged reply's time.
    """
    fwd_u = (used - log_used) % WRAP
    out_now = (avail - used) % WRAP
    out_log = None if log_avail is None else (log_avail - log_used) % WRAP
    if out_now > num:
        behind = (used - avail) % WRAP
        if 0 < behind < HALF:
            return Motion("back", (avail - (log_avail if log_avail is not None else used)) % WRAP,
                          behind, "avail",
                          (f"avail idx {avail} is {behind} behind the used idx {used} the device "
                           f"wrote: the device cannot complete requests never made available",))
        if log_avail is None or (avail - log_avail) % WRAP < HALF:
            return None                 # idx-ran-ahead says what is wrong with this ring
        fwd_a = (avail - log_avail) % WRAP
        return Motion("ambiguous", fwd_a, WRAP - fwd_a, "avail",
                      (f"avail idx {avail} is {out_now} ahead of used idx {used} (ring size {num}): "
                       f"the indices disagree, so neither tells which way the other moved",))
    n, said = _predicted(pace, log_time)
    if fwd_u < HALF:
        moved = None if out_log is None or out_log > num else fwd_u + out_now - out_log
        if moved is None or moved >= 0:
            # plainly forward, unless the pace says whole cycles more passed unseen
            if n is None or fwd_u / NEAR <= n <= fwd_u * NEAR:
                return None
            c, near = _nearest_forward(fwd_u, n)
            if not near or c == fwd_u:
                return None
            return Motion("forward", c, WRAP - fwd_u, "used",
                          (f"{said}: {(c - fwd_u) // WRAP} more cycle(s) of 65536 than the used "
                           f"idx shows ({log_used} -> {used})",))
        done = (f"used idx unchanged at {used}" if fwd_u == 0
                else f"used idx moved {fwd_u} forward ({log_used} -> {used})")
        return Motion("back", (avail - log_avail) % WRAP, -moved, "avail",
                      (f"{done} with {out_log} outstanding at the log and {out_now} now: the avail "
                       f"idx could be ahead only after 65536 more completions",))
    # The used idx is half a cycle or more behind the log's: a wrap forward, or a device reset.
    back = WRAP - fwd_u
    fwd_why = [f"used idx {used} moved with avail idx {avail} ({out_now} outstanding): the device "
               f"completed what the driver made available, and QEMU's used idx goes back only "
               f"when the device is reset"]
    reset_why: list[str] = []
    if _fresh_slots(used_ring, used, num):
        reset_why.append(f"used ring slots {used}..{num - 1} were never written: a ring allocated "
                         f"since the log, as after a reset")
    strong_fwd, count = False, fwd_u
    if n is not None:
        c, near = _nearest_forward(fwd_u, n)
        if near:
            fwd_why.append(f"{said}, as the {c} of a wrap")
            strong_fwd, count = True, c
        elif n < fwd_u / FAR:
            reset_why.append(f"{said}, far fewer than the {fwd_u} a wrap needs")
    if reset_why and strong_fwd:
        return Motion("ambiguous", count, back, "used", tuple(fwd_why + reset_why))
    if reset_why:
        return Motion("reset", fwd_u, back, "used", tuple(reset_why))
    if not strong_fwd:
        slots = ("" if used_ring is None else
                 " and every used slot has been written" if used >= num else
                 " and the used slots past the used idx hold older entries")
        fwd_why.append("no sign of a reset: the rings are where the log saw them (a driver "
                       "re-initialising its queue allocates new ones)" + slots)
    return Motion("forward", count, back, "used", tuple(fwd_why))


def log_pace(knowledge: LogKnowledge | None) -> dict[tuple[str, int], Pace]:
    """Per ``(path, queue)``, the pace of the used idx over the log's queue-status replies.

    Only the last run of consecutive replies on the same rings counts: a relocation, or a step of
    half a cycle or more (which could be a wrap or a step back itself), starts a new run; each
    smaller step is taken as forward. ``stop`` is the first ``STOP`` event after the last
    reply: the dump cannot be earlier, and QEMU's indices do not move while the VM is stopped.
    """
    if knowledge is None:
        return {}
    runs: dict[tuple[str, int], list[tuple[float, int]]] = {}
    rings: dict[tuple[str, int], Any] = {}
    for x in knowledge.all("x-query-virtio-queue-status"):
        path, queue = x.arguments.get("path"), x.arguments.get("queue")
        ret = x.reply.get("return") if isinstance(x.reply, dict) else None
        t = x.t_reply if x.t_reply is not None else x.t
        if not isinstance(path, str) or not isinstance(queue, int) or isinstance(queue, bool) \
                or not isinstance(ret, dict) or not isinstance(ret.get("used-idx"), int) or t is None:
            continue
        key, where = (path, queue), (ret.get("vring-desc"), ret.get("vring-avail"), ret.get("vring-used"))
        used = int(ret["used-idx"]) % WRAP
        run = runs.get(key)
        # a step of half a cycle or more is itself a wrap-or-back question: the run starts again
        if rings.get(key) != where or not run or t < run[-1][0] or (used - run[-1][1]) % WRAP >= HALF:
            runs[key], rings[key] = [], where
        runs[key].append((float(t), used))
    out: dict[tuple[str, int], Pace] = {}
    for key, run in runs.items():
        if len(run) < 2 or run[-1][0] <= run[0][0]:
            continue
        done = sum((b - a) % WRAP for (_, a), (_, b) in zip(run, run[1:]))
        stops = knowledge.events_since(run[-1][0], {"STOP"})
        stop = min((e.t if e.t is not None else e.t_log for e in stops
                    if (e.t if e.t is not None else e.t_log) is not None), default=None)
        out[key] = Pace(done / (run[-1][0] - run[0][0]), len(run), run[0][0], run[-1][0], stop)
    return out

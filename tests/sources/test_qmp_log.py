"""read_qmp_log on the real captures' transcripts (format 1) and the pairing rules."""

from __future__ import annotations

import json

import pytest

from vdecode.errors import InputError
from vdecode.sources.qmp_log import read_qmp_log


def _messages(path):
    return [json.loads(line)["msg"] for line in open(path)]


@pytest.mark.parametrize("kind", ["early", "instant"])
def test_capture_transcript_pairs_every_command(capture, kind):
    path = capture.log(kind)
    log = read_qmp_log(path)
    assert log.format == "jsonl" and log.warnings == []
    [mon] = log.monitors
    msgs = _messages(path)
    assert mon.greeting == msgs[0]
    requests = [m for m in msgs if "execute" in m]
    assert [x.request for x in mon.exchanges] == requests
    for x in mon.exchanges:
        assert x.reply is not None and x.reply["id"] == x.request["id"]
        assert x.t <= x.t_reply and x.line < x.line_reply
    assert [e.raw for e in mon.events] == [m for m in msgs if "event" in m]


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match=rf"^{missing}: cannot open: No such file or directory$"):
        read_qmp_log(missing)


def test_knowledge_latest_reply_per_command_and_arguments(captures):
    from vdecode.sources.qmp_log import LogKnowledge

    cap = captures["basic"]
    k = LogKnowledge.from_log(read_qmp_log(cap.log("instant")))
    assert k.qemu_version == (7, 2, 22)
    assert k.qemu_package == "Debian 1:7.2+dfsg-7+deb12u18+b3"
    msgs = [json.loads(line) for line in open(cap.log("instant"))]
    assert k.span == (msgs[0]["t"], msgs[-1]["t"])
    statuses = k.all("x-query-virtio-status")
    path = statuses[0].arguments["path"]
    same = [x for x in statuses if x.arguments == {"path": path}]
    assert len(same) == 2                      # early snapshot, then after stop
    assert k.latest("x-query-virtio-status", {"path": path}) is same[-1]
    assert k.latest("x-query-virtio-status", {"path": "/nope"}) is None
    q = k.all("x-query-virtio-queue-status")[0]
    reordered = dict(reversed(list(q.arguments.items())))
    assert k.latest("x-query-virtio-queue-status", reordered).arguments == q.arguments
    assert k.latest("x-query-virtio") is k.all("x-query-virtio")[-1]
    stop = [e for e in k.events_since(None) if e.name == "STOP"]
    assert len(stop) == 1 and k.state_events_since(stop[0].t)[0] is stop[0]
    assert [e.name for e in k.events_after(same[0])] == ["STOP"] or \
        "STOP" in [e.name for e in k.events_after(same[0])]
    assert "STOP" not in [e.name for e in k.events_after(same[1])]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vdecode.sources.qmp_log.builder import LogBuilder  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 30), data=st.data())
def test_pairing_by_id_survives_any_reply_order(n, data):
    """Replies in any order (OOB, interleaved monitors) pair with their command by id."""
    b = LogBuilder("t.log", "test")
    ids = data.draw(st.lists(st.one_of(st.integers(), st.text(max_size=5),
                                       st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)),
                             min_size=n, max_size=n, unique_by=lambda v: json.dumps(v, sort_keys=True)))
    events = [("req", i) for i in range(n)] + [("rep", i) for i in range(n)]
    order = data.draw(st.permutations(events))
    sent = set()
    pending_replies = []
    line = 0
    for kind, i in order:       # a reply is logged only after its command
        line += 1
        if kind == "req":
            b.message({"execute": f"c{i}", "id": ids[i]}, line=line, monitor="m")
            sent.add(i)
            for j in [j for j in pending_replies if j in sent]:
                pending_replies.remove(j)
                b.message({"return": j, "id": ids[j]}, line=line, monitor="m")
        elif i in sent:
            b.message({"return": i, "id": ids[i]}, line=line, monitor="m")
        else:
            pending_replies.append(i)
    log = b.finish()
    assert log.warnings == []
    [mon] = log.monitors
    assert sorted(int(x.command[1:]) for x in mon.exchanges) == list(range(n))
    assert all(x.reply["return"] == int(x.command[1:]) for x in mon.exchanges)


@settings(max_examples=100, deadline=None)
@given(pattern=st.lists(st.sampled_from(["req", "rep", "event"]), max_size=40))
def test_fifo_pairing_without_ids(pattern):
    """Without ids a reply answers the oldest unanswered command; one with none pending stands alone."""
    b = LogBuilder("t.log", "test")
    reqs = reps = 0
    pending: list[int] = []
    expected: list[tuple[int | None, int | None]] = []
    for line, kind in enumerate(pattern, 1):
        if kind == "req":
            b.message({"execute": f"c{reqs}"}, line=line)
            pending.append(reqs)
            reqs += 1
        elif kind == "rep":
            b.message({"return": reps}, line=line)
            expected.append((pending.pop(0) if pending else None, reps))
            reps += 1
        else:
            b.message({"event": "STOP"}, line=line)
    expected += [(i, None) for i in pending]
    log = b.finish()
    got = [(None if x.command is None else int(x.command[1:]),
            None if x.reply is None else x.reply["return"]) for x in log.exchanges]
    assert sorted(got, key=repr) == sorted(expected, key=repr)


def test_doctests():
    import doctest

    from vdecode.sources.qmp_log import builder, knowledge, libvirt, qmp_shell, qmpjson, transport
    for module in (builder, knowledge, libvirt, qmp_shell, qmpjson, transport):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_latest_only_keeps_one_answer_per_question(tmp_path):
    """What reconstruction reads from a log does not grow with the log's length."""
    from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log

    path = tmp_path / "long.jsonl"
    with open(path, "w") as f:
        for i in range(30000):
            args = {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "queue": i % 3}
            f.write(json.dumps({"t": i, "dir": "->", "msg": {
                "execute": "x-query-virtio-queue-status", "arguments": args, "id": i}}) + "\n")
            f.write(json.dumps({"t": i + 0.5, "dir": "<-", "msg": {
                "return": {"used-idx": i}, "id": i}}) + "\n")
            f.write(json.dumps({"t": i + 0.6, "dir": "<-", "msg": {
                "event": "RTC_CHANGE", "data": {"offset": i},
                "timestamp": {"seconds": i, "microseconds": 0}}}) + "\n")
    full = read_qmp_log(path)
    small = read_qmp_log(path, latest_only=True)
    assert len(full.exchanges) == 30000 and len(full.monitors[0].events) == 30000
    # one answer per question; a queue's status keeps its newest PACE_SAMPLES (its pace)
    from vdecode.sources.qmp_log.builder import PACE_SAMPLES
    assert len(small.exchanges) == 3 * PACE_SAMPLES and small.monitors[0].events == []
    k = LogKnowledge.from_log(small)
    for q in range(3):
        want = LogKnowledge.from_log(full).latest("x-query-virtio-queue-status",
                                                  {"path": "/machine/peripheral-anon/device[0]/"
                                                           "virtio-backend", "queue": q})
        assert k.latest("x-query-virtio-queue-status", want.arguments).reply == want.reply

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

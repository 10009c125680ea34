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

"""``vdecode report DUMP --trace TRACE``: the trace's timeline drawn per queue, in the same
self-contained page, each strip's marks standing for the timeline's counts, rendered by headless
Chromium without a console message (on the real traced runs of ``tests/data/traces``)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

import vdecode
from tests.render.test_report import CHROMIUM, EXTERNAL, NO_CHROMIUM, SVG_NS, _chromium
from vdecode.cli import cli

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"


def _page(tmp_path: Path, case: str, *more: str) -> str:
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", str(DATA / f"{case}.vdb.zst"), "--trace",
                                   str(DATA / f"{case}.log.zst"), "-o", str(out), *more],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out.read_text(encoding="utf-8")


def _strips(page: str, cls: str) -> list[ET.Element]:
    return [ET.fromstring(m.replace("<svg ", f'<svg xmlns="{SVG_NS[1:-1]}" ', 1))
            for m in re.findall(rf'<svg class="{cls}".*?</svg>', page, re.S)]


def test_each_traced_queue_has_its_strip_and_the_marks_are_the_counts(tmp_path):
    page = _page(tmp_path, "tracepanic")
    assert not EXTERNAL.search(page)
    with vdecode.open(DATA / "tracepanic.vdb.zst", trace=DATA / "tracepanic.log.zst") as m:
        join = m.trace
    busy = [q for q in join.queues if q.timeline.popped or q.timeline.returned]
    strips = _strips(page, "timeline")
    assert len(strips) == len(busy) > 5
    for q, svg in zip(busy, strips):
        tq = q.timeline
        assert (int(svg.get("data-popped")), int(svg.get("data-returned"))) == (tq.popped, tq.returned)
        rects = list(svg.iter(f"{SVG_NS}rect"))
        assert sum(int(r.get("data-popped")) for r in rects if r.get("class") == "pops") == tq.popped
        assert sum(int(r.get("data-returned")) for r in rects
                   if r.get("class") == "fills") == tq.returned
        lines = list(svg.iter(f"{SVG_NS}line"))
        assert sum(ln.get("class") == "reset" for ln in lines) == tq.resets
        (pause,) = [ln for ln in lines if ln.get("class") == "pause"]
        assert int(pause.get("data-line")) == join.timeline.pause.line
        (flight,) = [p for p in svg.iter(f"{SVG_NS}polygon") if p.get("class") == "in-flight"]
        assert int(flight.get("data-last")) == len(tq.in_flight)
    # the zoom on the pause: the one write the throttled disk held, returned after it
    (zoom,) = _strips(page, "pause-zoom")
    (bar,) = [r for r in zoom.iter(f"{SVG_NS}rect") if r.get("class") == "element"]
    blk = join.queue("/machine/peripheral/blk0/virtio-backend", 0).timeline
    (held,) = blk.in_flight_at_pause
    assert bar.get("data-elem") == f"{held.elem:#x}" and bar.get("data-returned") == "1"
    assert int(bar.get("data-line")) == held.popped.line


def test_a_request_never_returned_is_red_and_a_report_without_trace_has_no_strip(tmp_path):
    page = _page(tmp_path, "traceinflight", "--device", "balloon0")
    (strip,) = _strips(page, "timeline")
    assert strip.get("data-in-flight") == "1"
    (zoom,) = _strips(page, "pause-zoom")
    (bar,) = [r for r in zoom.iter(f"{SVG_NS}rect") if r.get("class") == "element"]
    assert bar.get("data-returned") == "0" and bar.get("fill") == "#d62020"
    out = tmp_path / "plain.html"
    res = CliRunner().invoke(cli, ["report", str(DATA / "traceinflight.vdb.zst"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert 'class="timeline"' not in out.read_text() and 'id="trace"' not in out.read_text()


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_chromium_renders_the_trace_timelines(tmp_path):
    page = _page(tmp_path, "tracereset")
    dom, console = _chromium(tmp_path, tmp_path / "r.html")
    assert console == []
    assert dom.count('<svg class="timeline"') == page.count('<svg class="timeline"') > 5
    assert dom.count('<svg class="pause-zoom"') == 1

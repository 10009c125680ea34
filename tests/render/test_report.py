"""``vdecode report`` and ``triage --html``: the pages are self-contained, each queue with a ring
has its picture, the picture's elements stand for the queue's indices and chains, and headless
Chromium renders the pages without a console message.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it); the browser tests skip with
:data:`NO_CHROMIUM` when it is not on this machine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

import vdecode
from vdecode.cli import cli
from vdecode.errors import NotInInput
from vdecode.render.ring_svg import COLOURS, ring_svg

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = ("needs headless Chromium (Debian: apt-get install -y chromium; .ci/run installs "
               "it) to render the pages")
SVG_NS = "{http://www.w3.org/2000/svg}"

# what a self-contained page must not have: anything a browser would fetch
EXTERNAL = re.compile(r"""<script|<link|<img|<iframe|<object|<embed|@import|url\(|"""
                      r"""\ssrc\s*=|\shref\s*=\s*["'](?!#)""", re.I)


def _report(tmp_path: Path, *args: str) -> tuple[str, str]:
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", *args, "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out.read_text(encoding="utf-8"), res.output


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(m.replace("<svg ", f'<svg xmlns="{SVG_NS[1:-1]}" ', 1))
            for m in re.findall(r'<svg class="ring".*?</svg>', page, re.S)]


def _check_picture(svg: ET.Element, detail: dict) -> None:
    """Every mark sits at its index modulo the size; the coloured runs are exactly the chains'
    slots, by state; a broken chain's are red."""
    size = detail["size"]
    assert int(svg.get("data-size")) == size
    want = {"avail": (detail.get("avail") or {}).get("idx"),
            "used": (detail.get("used") or {}).get("idx"),
            "last_avail": detail["qemu"]["last_avail_idx"],
            "shadow": detail["qemu"]["shadow_avail_idx"]}
    marks = {m.get("data-name"): (int(m.get("data-idx")), int(m.get("data-slot")))
             for m in svg.iter(f"{SVG_NS}line") if m.get("class") == "marker"}
    assert marks == {k: (v, v % size) for k, v in want.items() if v is not None}
    drawn: dict[str, dict[int, str]] = {"desc": {}, "avail": {}}
    for p in svg.iter(f"{SVG_NS}path"):
        assert p.get("stroke") == COLOURS[p.get("data-state")]
        for slot in range(int(p.get("data-first")), int(p.get("data-last")) + 1):
            drawn[p.get("data-ring")][slot] = p.get("data-state")
    expect_avail: dict[int, str] = {}
    expect_desc: dict[int, str] = {}
    for ch in detail["chains"]:
        st = "broken" if ch["problems"] else ch["state"]
        if detail.get("avail") is not None:
            expect_avail[ch["slot"]] = st
        for i in ([ch["head"]] if ch["indirect"] else [d["index"] for d in ch["descs"]]):
            if expect_desc.get(i) != "broken":
                expect_desc[i] = st
    assert drawn["avail"] == expect_avail
    assert drawn["desc"] == {i: s for i, s in expect_desc.items() if 0 <= i < size}
    if detail.get("avail") is not None:     # the pending slots run from last_avail to avail
        last, avail = detail["qemu"]["last_avail_idx"], detail["avail"]["idx"]
        pending = {i % size for i in range(last, last + (avail - last) % 0x10000)}
        assert {s for s, st in drawn["avail"].items() if st in ("pending", "broken")
                and s in pending} == {c["slot"] for c in detail["chains"]
                                      if c["state"] == "pending"}


def test_report_of_the_sample_is_one_self_contained_page(tmp_path):
    page, said = _report(tmp_path, str(SAMPLES / "basic-core.vdb"))
    assert len(page.encode()) <= 2 * 1024 * 1024
    assert not EXTERNAL.search(page), EXTERNAL.search(page).group(0)
    with vdecode.open(SAMPLES / "basic-core.vdb") as m:
        report = m.report()
        sized = sum(len([q for q in d.queues if q.size]) for d in m.devices)
    details = [q.detail_json() for q in report.view.queue_detail]
    with_ring = [d for d in details if d["size"] and d["rings"]["desc"]]
    svgs = _svgs(page)
    assert len(svgs) == len(with_ring) == sized > 10
    for svg, detail in zip(svgs, with_ring):
        assert (svg.get("data-device"), int(svg.get("data-queue"))) == (detail["device"],
                                                                        detail["index"])
        _check_picture(svg, detail)
    # the findings with their evidence, and the QMP replies
    for f in report.view.findings:
        assert f"<code>{f.code}</code>" in page
    assert page.count("<summary><code>x-query-virtio") == len(report.qmp) > len(with_ring)
    assert f"{len(with_ring)} ring picture(s)" in said


def test_picture_marks_a_broken_chain_in_red():
    from vdecode.reconstruct.postmortem import records as r
    chain = r.Chain("pending", 5, 5, 3, None, (r.Descriptor(3, 0x1000, 16, 1, ("next",)),
                                               r.Descriptor(9, 0x2000, 16, 1, ("next",))),
                    32, 0, ("loop",), None)
    ok = r.Chain("pending", 6, 6, 4, None, (r.Descriptor(4, 0x1000, 16, 0, ()),), 16, 0, (), None)
    q = r.Queue("/machine/x/virtio-backend", 0, 16, False, r.Rings(0x1000, 0x2000, 0x3000),
                r.Indices(7, 0, None, 5, 0, None, 5, 7, 5, 0, None, None), 2, 0, "corrupt",
                (chain, ok), (), None, dict.fromkeys(("size", "avail_idx", "used_idx",
                                                      "last_avail_idx", "inflight",
                                                      "shadow_avail_idx", "inuse",
                                                      "signalled_used", "rings"), "core"),
                None, "loop", False, True, False, None)
    svg = ET.fromstring(ring_svg(q, standalone=True))
    _check_picture(svg, q.detail_json())
    red = [p for p in svg.iter(f"{SVG_NS}path") if p.get("stroke") == COLOURS["broken"]]
    assert {(p.get("data-ring"), p.get("data-first")) for p in red} == {("avail", "5"),
                                                                       ("desc", "3"), ("desc", "9")}
    (link,) = [x for x in svg.iter(f"{SVG_NS}polyline")]
    assert link.get("class") == "link broken" and link.get("stroke") == COLOURS["broken"]


def test_svg_writes_one_queue_alone(tmp_path):
    svg = tmp_path / "q.svg"
    res = CliRunner().invoke(cli, ["report", str(SAMPLES / "basic-core.vdb"), "--device",
                                   "virtio-net", "--queue", "0", "--svg", str(svg)])
    assert res.exit_code == 0, res.output
    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG_NS}svg" and root.get("data-queue") == "0"
    with vdecode.open(SAMPLES / "basic-core.vdb") as m:
        (q,) = m.view("virtio-net", 0).queue_detail
    _check_picture(root, q.detail_json())
    # several devices have a queue 0: --svg says which, one line, nothing written
    res = CliRunner().invoke(cli, ["report", str(SAMPLES / "basic-core.vdb"), "--queue", "0",
                                   "--svg", str(tmp_path / "x.svg")])
    assert isinstance(res.exception, NotInInput) and res.exception.exit_status == 3
    assert "choose one with --device" in str(res.exception)
    assert not (tmp_path / "x.svg").exists()
    res = CliRunner().invoke(cli, ["report", str(SAMPLES / "basic-core.vdb"), "--svg", str(svg)])
    assert res.exit_code == 2 and "give --queue" in res.output


def test_report_narrowed_by_queue_and_device(tmp_path):
    page, _ = _report(tmp_path, str(SAMPLES / "basic-core.vdb"), "--device", "virtio-serial",
                      "--queue", "4")
    (svg,) = _svgs(page)
    assert svg.get("data-device").endswith("device[3]/virtio-backend")
    assert svg.get("data-queue") == "4"


def _chromium(tmp_path: Path, page: Path) -> tuple[str, list[str]]:
    """The DOM Chromium built, and its console lines."""
    res = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                          f"--user-data-dir={tmp_path / 'chromium-profile'}",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout, [line for line in res.stderr.splitlines() if "CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_chromium_renders_the_report_without_console_messages(tmp_path):
    page, _ = _report(tmp_path, str(SAMPLES / "basic-core.vdb"))
    dom, console = _chromium(tmp_path, tmp_path / "r.html")
    assert console == []
    assert dom.count('<svg class="ring"') == page.count('<svg class="ring"') > 10
    # the check can fail: a page that logs is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('x')</script></body></html>")
    assert _chromium(tmp_path, bad)[1]


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_chromium_renders_the_fleet_page(tmp_path):
    out = tmp_path / "fleet.html"
    res = CliRunner().invoke(cli, ["triage", str(SAMPLES / "basic-core.vdb"),
                                   str(SAMPLES / "mixed-elf-early.vdb"), "--workers", "1",
                                   "--html", str(out), "--pictures"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert not EXTERNAL.search(page.replace(' href="fleet-vms/', ' data-x="'))
    dom, console = _chromium(tmp_path, out)
    assert console == []
    links = re.findall(r'href="(fleet-vms/[^"#]+)', page)
    assert len(set(links)) == 2
    for link in set(links):
        vm_page = tmp_path / link
        assert vm_page.exists() and _svgs(vm_page.read_text(encoding="utf-8"))
        assert _chromium(tmp_path, vm_page)[1] == []

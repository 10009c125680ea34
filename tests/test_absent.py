"""Absent is stated, everywhere (issue 24): inputs cut at test time, from the samples (run without
``../shared``) and from the shared real captures (kdump-zlib, ELF, QEMU core), through every
surface: the view's text and JSON, ``qmp``'s stderr and replies, bundles (and bundles of them),
triage's verdict, the Python API. Whole inputs say nothing new (their goldens are unchanged:
``tests/render/test_view.py``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import vdecode.api as api
from tests.builders.kdump import EXCLUDED, write_kdump
from tests.conftest import NO_CAPTURES
from vdecode.cli import cli
from vdecode.errors import VdecodeError
from vdecode.space.open import open_dump

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "basic-core.vdb"          # an ELF file (a bundle) of a QEMU core
BASIC_LOG = "early.jsonl"
BLK = "/machine/peripheral-anon/device[0]/virtio-backend"


def cut(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` bytes of ``src`` as ``dst`` (copied in chunks: dumps are large)."""
    with open(src, "rb") as f, open(dst, "wb") as o:
        left = n
        while left > 0:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                break
            o.write(chunk)
            left -= len(chunk)
    return dst


def view(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["view", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


@pytest.fixture
def cut_sample(tmp_path) -> Path:
    """basic-core.vdb cut at 60%: its notes are whole, some ring pages are gone."""
    return cut(SAMPLE, tmp_path / "cut.vdb", int(SAMPLE.stat().st_size * 0.6))


# --- without ../shared: the samples cut at test time ----------------------------------------

def test_whole_sample_says_nothing_new(tmp_path):
    with open_dump(SAMPLE) as d:
        assert d.absent is None and not d.incomplete
    code, out = view(str(SAMPLE))
    assert code == 0 and "INCOMPLETE" not in out
    doc = json.loads(view(str(SAMPLE), "--json")[1])
    assert "absent" not in doc and all(f["severity"] != "unknown" for f in doc["findings"])


def test_cut_sample_view_text(cut_sample):
    code, out = view(str(cut_sample))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "cut.vdb (bundle)"
    head = " ".join(lines[2:5])
    assert head.startswith("INCOMPLETE DUMP: 213.3 KiB of guest RAM absent, the dump is cut short: "
                           "the file ends at offset 0x")
    assert "its program headers say 0x" in head
    assert "Findings: none" not in out
    assert "UNKNOWN" in out and "not read: the ring's pages are absent from the dump (cut short)" \
        in " ".join(out.split())
    assert "no carved ring fits" not in out


def test_cut_sample_view_json(cut_sample):
    code, out = view(str(cut_sample), "--json")
    doc = json.loads(out)
    assert list(doc)[:3] == ["schema_version", "input", "absent"]
    absent = doc["absent"]
    assert absent["incomplete"] is True and absent["absent_bytes"] == 218405
    (part,) = absent["parts"]
    assert part["kind"] == "cut-short" and not part["by_design"] and part["ranges"]
    unknown = [f for f in doc["findings"] if f["severity"] == "unknown"]
    assert unknown and all(f["code"] == "absent" for f in unknown)
    f = unknown[0]
    assert f["evidence"]["kind"] == "cut-short" and f["evidence"]["absent"][0]["area"] in (
        "desc", "avail", "used")
    # every queue whose row says absent has its unknown finding: nothing dropped in silence
    rows = {(d["path"], q["index"]) for d in doc["devices"] for q in d["queues"]
            if q["health"] == "absent"}
    assert rows and rows <= {(f["device"], f["queue"]) for f in unknown}


def test_cut_sample_qmp_says_it_first(cut_sample):
    r = subprocess.run([sys.executable, "-m", "vdecode", "qmp", str(cut_sample)],
                       input='{"execute": "qmp_capabilities"}\n', capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("vdecode: note: INCOMPLETE DUMP: 213.3 KiB of guest RAM absent, the "
                            "dump is cut short: the file ends at offset 0x")
    assert "Traceback" not in r.stderr


def test_bundle_of_cut_sample_remembers(cut_sample, tmp_path):
    out = tmp_path / "again.vdb"
    r = subprocess.run([sys.executable, "-m", "vdecode", "bundle", str(cut_sample), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0].startswith("vdecode: note: INCOMPLETE DUMP: 213.3 KiB of "
                                               "guest RAM absent, the dump is cut short")
    with open_dump(out) as d:                  # the new bundle is whole, its origin was not
        assert d.incomplete
        (part,) = d.absent.parts
        assert part.kind == "source-incomplete" and part.reason.startswith("cut.vdb, cut-short: ")
        assert d.info["incomplete"] is True
    code, text = view(str(out))
    assert code == 0 and "INCOMPLETE DUMP: 213.3 KiB of guest RAM absent from the bundle's " \
        "source: cut.vdb, cut-short" in " ".join(text.split())
    doc = json.loads(view(str(out), "--json")[1])
    assert doc["absent"]["parts"][0]["kind"] == "source-incomplete"


def test_api_machine(cut_sample):
    with api.open(cut_sample) as m:
        assert m.incomplete and m.absent.incomplete and m.absent.parts[0].kind == "cut-short"
        assert m.notes[0].startswith("INCOMPLETE DUMP: ")
        assert "INCOMPLETE" in repr(m)
        unknown = [f for f in m.findings if f.severity == "unknown"]
        assert unknown and unknown[0].code == "absent"
    with api.open(SAMPLE) as m:
        assert not m.incomplete and m.absent is None


def test_cut_inside_header_is_one_line(tmp_path):
    """Cut inside the notes: nothing can be said of the devices; one line, status 2."""
    p = cut(SAMPLE, tmp_path / "head.vdb", int(SAMPLE.stat().st_size * 0.3))
    r = subprocess.run([sys.executable, "-m", "vdecode", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"vdecode: error: {p} at offset 0x")
    assert "runs past the end of the file" in r.stderr


def test_excluded_by_design_is_not_incomplete(tmp_path):
    """makedumpfile's dump level left pages out: stated, as excluded by design, not as a cut."""
    path = tmp_path / "x.kdump"
    write_kdump(path, {0: b"a" * 4096, 1: EXCLUDED, 2: b"c" * 4096}, flattened=False)
    with open_dump(path) as d:
        assert d.absent is not None and not d.incomplete
        (part,) = d.absent.parts
        assert part.kind == "excluded" and part.by_design and part.ranges == ((0x1000, 0x1000),)
        assert "left out 1 pages" in part.reason
        assert part.text().startswith("4 KiB of guest RAM excluded by design: ")


def test_rearranged_kdump_cut_in_page_data(tmp_path):
    """A rearranged kdump (QEMU >= 8.2 ``kdump-raw-*``) cut inside its page data."""
    path = tmp_path / "r.kdump"
    lay = write_kdump(path, {0: bytes(range(256)) * 16, 1: b"b" * 4096, 2: bytes(4096)},
                      flattened=False)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    with open_dump(path) as d:
        assert d.incomplete and d.absent.parts[0].kind == "cut-short"
        assert d.absent.parts[0].reason.startswith(f"the file ends at offset {len(data) - 100:#x}, "
                                                   f"its headers say {len(data):#x}")
        (part,) = d.absent.parts
        # the last 100 bytes held the data of the two compressed pages; the zero page is whole
        assert part.ranges == ((0, 2 * 4096),) and part.absent_bytes == 8192
        assert "2 of 3 dumped pages are not in it" in part.reason
        for pfn in (0, 1):
            with pytest.raises(VdecodeError, match="was not written: the file is cut short at"):
                d.space.read(pfn << 12, 1)
        assert bytes(d.space.read(2 << 12, 4096)) == bytes(4096)
    assert lay is not None


# --- with ../shared: the real captures cut at test time -------------------------------------

@pytest.fixture(scope="module")
def basic(captures):
    return captures["basic"]


def _cuts(size: int) -> list[tuple[str, int]]:
    return [("quarter", size // 4), ("half", size // 2), ("nine-tenths", size * 9 // 10)]


@pytest.mark.parametrize("kind", ["kdump-zlib", "elf"])
def test_real_dump_cut(basic, tmp_path, kind):
    src = basic.dump(kind)
    log = str(basic.log("early"))
    for name, n in [*_cuts(src.stat().st_size), ("1 MB", 1_000_000)]:
        p = cut(src, tmp_path / f"cut.{kind}", n)
        code, out = view(str(p), "--log", log)
        assert code == 0, (name, out)
        assert "INCOMPLETE DUMP: " in out.splitlines()[2], (name, out[:400])
        assert "no carved ring fits" not in out
        doc = json.loads(view(str(p), "--log", log, "--json")[1])
        assert doc["absent"]["incomplete"] and doc["absent"]["parts"][0]["kind"] == "cut-short"
        unread = [(d["path"], q["index"]) for d in doc["devices"] for q in d["queues"]
                  if q["ring_error"]]
        unknown = {(f["device"], f["queue"]) for f in doc["findings"] if f["severity"] == "unknown"}
        assert set(unread) <= unknown, name            # never dropped in silence
        if unread:
            assert "Findings: none" not in out
    with pytest.raises(VdecodeError):                   # inside the header: one error
        open_dump(cut(src, tmp_path / f"head.{kind}", 300)).close()


def test_real_kdump_cut_1mb_everywhere(basic, tmp_path):
    """The issue's case: ``head -c 1000000 dump.kdump-zlib``."""
    p = cut(basic.dump("kdump-zlib"), tmp_path / "cut.kdump", 1_000_000)
    log = str(basic.log("early"))
    code, out = view(str(p), "--log", log)
    assert code == 0 and "Findings: none" not in out and "UNKNOWN virtio-blk q0: not read" in out
    assert "the ring's pages (desc 0x2ad4000, avail 0x2ad5000, used 0x2ad5240) are absent from the " \
           "cut dump" in " ".join(out.split())
    # qmp: the note first, and a reply that needs the absent bytes is an error naming them
    req = "\n".join(json.dumps(x) for x in (
        {"execute": "qmp_capabilities"},
        {"execute": "x-query-virtio-queue-element", "arguments": {"path": BLK, "queue": 0}})) + "\n"
    r = subprocess.run([sys.executable, "-m", "vdecode", "qmp", str(p), "--log", log], input=req,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.startswith("vdecode: note: INCOMPLETE DUMP: 141.6 MiB")
    reply = json.loads(r.stdout.splitlines()[-1])
    assert "was not written: the flattened stream is cut short" in reply["error"]["desc"]
    # bundle: small, says so first, and remembers
    out = tmp_path / "cut.vdb"
    r = subprocess.run([sys.executable, "-m", "vdecode", "bundle", str(p), "--log", log, "-o",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.startswith("vdecode: note: INCOMPLETE DUMP: ")
    # one line for the input, one per device whose rings are gone: not one per queue (was 231)
    assert len(r.stderr.splitlines()) <= 10 and "left out" not in r.stderr
    assert out.stat().st_size < 1_000_000               # was 2.7 MB: no carving of a cut dump
    with open_dump(out) as d:
        assert d.incomplete and d.absent.parts[0].kind == "source-incomplete"
    # triage: the verdict
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    shutil.copy(p, fleet / "vmcut.kdump")
    shutil.copy(log, fleet / "vmcut.qmp.jsonl")
    from vdecode.triage.run import run_triage
    (rec,) = run_triage([str(fleet)], workers=1, cache_dir=str(tmp_path / "cache"))
    assert rec["verdict"] == "incomplete" and rec["absent"]["kinds"] == ["cut-short"]
    assert rec["counts"]["unknown"] > 0


def test_real_core_with_cut_guest_dump(basic, tmp_path):
    """A QEMU core and a guest dump of its instant that was cut: still one VM (the lost RAM was
    there), QEMU's state from the core, and the view says the guest RAM is incomplete."""
    src = basic.dump("elf")
    p = cut(src, tmp_path / "half.elf", src.stat().st_size // 2)
    code, out = view(str(basic.dump("qemu-core")), str(p))
    assert code == 0, out
    assert out.splitlines()[1] == "QEMU state from QEMU core, QEMU 7.2.22"
    assert out.splitlines()[2].startswith("INCOMPLETE DUMP: 80.1 MiB of guest RAM absent")


def test_real_qemu_core_cut(basic, tmp_path):
    """gcore writes its notes last: a core cut anywhere loses them, one line, status 2."""
    src = basic.dump("qemu-core")
    for name, n in _cuts(src.stat().st_size)[1:2]:      # one cut: the file is 600 MB
        p = cut(src, tmp_path / "cut.core", n)
        r = subprocess.run([sys.executable, "-m", "vdecode", str(p)], capture_output=True,
                           text=True)
        assert r.returncode == 2 and r.stdout == "", name
        assert r.stderr.count("\n") == 1 and "runs past the end of the file" in r.stderr
        p.unlink()


def test_no_captures_reason():
    assert "../shared/captures" in NO_CAPTURES


@pytest.mark.parametrize("sample", ["basic-core.vdb", "mixed-elf-early.vdb"])
def test_cut_sweep_answers_or_fails_in_one_line(tmp_path, sample):
    """Cut anywhere: the view either answers, saying what is absent, or fails with a documented
    error (a ``VdecodeError``, one line from the command line); never anything else, and the
    input is left as it was."""
    from vdecode.errors import VdecodeError as Err
    src = REPO / "samples" / sample
    data = src.read_bytes()
    p = tmp_path / sample
    answered = 0
    for k in range(1, 24):
        n = len(data) * k // 24
        p.write_bytes(data[:n])
        for extra in ((), ("--json",)):
            res = CliRunner().invoke(cli, ["view", str(p), *extra])
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                assert isinstance(res.exception, Err), (n, repr(res.exception))
                continue
            assert res.exit_code == 0, (n, res.output[-300:])
            answered += 1
            if extra:
                assert json.loads(res.output)["absent"]["incomplete"] is True, n
            else:
                assert "INCOMPLETE DUMP: " in res.output, n
        assert p.read_bytes() == data[:n]
    assert src.read_bytes() == data and answered >= 20


def test_bundle_cut_in_its_closing_string_table(tmp_path):
    """The last bytes of every bundle are the string table its writer ends it with: cut there,
    no kept byte is lost, and the answer still says the file is not whole."""
    data = SAMPLE.read_bytes()
    p = tmp_path / "last.vdb"
    p.write_bytes(data[:-1])
    code, out = view(str(p))
    assert code == 0 and out.splitlines()[2].startswith("INCOMPLETE DUMP: the dump is cut short: ")
    assert "no guest RAM is lost" in " ".join(out.split())
    with open_dump(p) as d:
        assert d.incomplete and d.absent.absent_bytes == 0

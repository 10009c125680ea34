"""The compact view without colour is drawn without rich (start-up time), and must be the same
bytes rich would draw: checked on the samples' views at several widths, and on random
paragraphs against rich's own wrapping."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from vdecode.render import text as text_mod
from vdecode.render.plain import PlainConsole, PlainPadding, wrap
from vdecode.render.text import Kit, render_view_text

REPO = Path(__file__).resolve().parents[2]


def _rich_console(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, force_terminal=False, color_system=None, highlight=False,
                   emoji=False, markup=False, soft_wrap=False), buf


def _views() -> list:
    """The views of the samples, whole and narrowed (as ``vdecode DUMP`` asks its machine)."""
    import vdecode
    views = []
    for sample in sorted((REPO / "samples").glob("*.vdb")):
        with vdecode.open(sample) as machine:
            for device, queue, show_all in ((None, None, False), (None, 0, False),
                                            ("virtio-net", None, False), (None, None, True)):
                try:
                    views.append(machine.view(device, queue, show_all=show_all))
                except vdecode.VdecodeError:
                    pass                  # a name two devices share: the CLI's error, no view
    assert len(views) >= 6
    return views


@pytest.fixture(scope="module")
def views():
    return _views()


@pytest.mark.parametrize("width", [40, 57, 80, 132])
def test_plain_compact_view_is_what_rich_draws(views, width, monkeypatch):
    plain = [render_view_text(v, width=width, compact=True) for v in views]
    real = Kit.for_output
    monkeypatch.setattr(Kit, "for_output",
                        classmethod(lambda cls, w, *, rich, color: real.__func__(cls, w, rich=True,
                                                                                  color=color)))
    drawn = [render_view_text(v, width=width, compact=True) for v in views]
    assert plain == drawn
    assert any(len(line) > 30 for out in plain for line in out.splitlines())


def test_piped_compact_view_does_not_import_rich():
    import subprocess
    code = ("import sys, vdecode.cli; sys.argv = ['vdecode', sys.argv[1], '--queue', '0']\n"
            "try:\n    vdecode.cli.main()\nexcept SystemExit:\n    pass\n"
            "print('RICH' if any(m.startswith('rich') for m in sys.modules) else 'NO-RICH')")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "samples" / "basic-core.vdb")],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "NO-RICH"
    assert "virtio-net" in out


words = st.lists(st.text(alphabet=st.sampled_from("ab×–…cd 12-/:"), min_size=0, max_size=30),
                 min_size=0, max_size=12).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(body=words, width=st.integers(min_value=4, max_value=60), indent=st.integers(0, 6))
def test_wrap_matches_rich(body, width, indent):
    con, buf = _rich_console(width + indent)
    con.print(Padding(Text(body), (0, 0, 0, indent), expand=False))
    mine = PlainConsole(width + indent)
    mine.print(PlainPadding(body, (0, 0, 0, indent)))
    strip = lambda s: [line.rstrip() for line in s.split("\n")]  # noqa: E731
    assert strip(mine.getvalue()) == strip(buf.getvalue())


def test_wrap_examples():
    assert wrap("alpha beta gamma", 11) == ["alpha beta ", "gamma"]
    assert wrap("", 10) == [""]
    assert text_mod.CHAIN_LINES > 0

"""The range arithmetic behind what a bundle keeps, against per-byte references; the doctests."""

from __future__ import annotations

import doctest

from hypothesis import given
from hypothesis import strategies as st

import vdecode.reconstruct.postmortem.evidence as evidence
import vdecode.render.elf_core as elf_core
import vdecode.sources.bundle_notes as bundle_notes
from vdecode.reconstruct.postmortem.evidence import clip
from vdecode.space.ram_map import merge_spans

spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
                 max_size=12)


def covered(ranges) -> set[int]:
    return {b for s, e in ranges for b in range(s, e)}


@given(spans)
def test_merge_spans_covers_the_same_bytes_with_disjoint_sorted_ranges(ranges):
    out = merge_spans(ranges)
    assert covered(out) == covered(ranges)
    assert all(s < e for s, e in out)
    assert all(a[1] < b[0] for a, b in zip(out, out[1:]))     # touching ranges are joined


@given(spans, spans)
def test_clip_is_the_intersection(ranges, ram):
    out = clip(merge_spans(ranges), merge_spans(ram))
    assert covered(out) == covered(ranges) & covered(ram)
    assert out == sorted(out)


def test_doctests():
    for mod in (evidence, elf_core, bundle_notes):
        assert doctest.testmod(mod).failed == 0, mod.__name__

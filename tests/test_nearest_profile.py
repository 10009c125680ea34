"""Which shipped profile answers a QEMU release that has none of its own: the one made from the
release nearest it, as each folder's ``made_from.json`` says (data, not a rule by folder name), and
for a core that names no release, the one made from the release nearest the range its structures
allow (issue 25: 10.2.2 gets 11.1, made from 10.2.2's source; a 10.0 core with 10.0's profile left
out gets 11.1's tables, not its layout template 7.2's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import vdecode.profiles as profiles
from vdecode.profiles import (available_versions, made_from, nearest_version, nearness,
                              release_within)


@pytest.fixture
def formats_copy(tmp_path, monkeypatch):
    """A copy of formats/ that vdecode reads instead (an install with other data)."""
    out = tmp_path / "formats"
    shutil.copytree(profiles.formats_dir(), out)
    monkeypatch.setattr(profiles, "formats_dir", lambda: out)
    profiles._load_json.cache_clear()
    yield out
    profiles._load_json.cache_clear()


def test_every_profile_names_the_releases_it_was_made_from():
    for v in available_versions():
        rel = made_from(v)
        assert rel and all(len(r.split(".")) == 3 for r in rel), v
        # the profile's own release is one of them (its record.json and live rules are its own)
        assert any(r.startswith(v + ".") for r in rel), (v, rel)
    assert made_from("11.1") == ("10.2.2", "11.1.3")


def test_an_unknown_release_gets_the_profile_made_from_the_nearest():
    have = available_versions()
    assert nearest_version("10.2.2", have) == ("11.1", False)      # 10.2.2's source: 11.1's
    assert nearest_version("9.2.0", have) == ("10.0", False)
    assert nearest_version("8.2.2", have) == ("7.2", False)        # 100 from 7.2, 198 from 10.0
    assert nearest_version("12.0.0", have) == ("11.1", False)
    assert nearness("10.2.2", "11.1") == "11.1 (made from QEMU 10.2.2: the same release)"
    assert nearness("9.2.0", "10.0") == "10.0"


def test_the_choice_follows_the_data(formats_copy):
    # the same 11.1 folder, had it been made from 11.1.3 alone: 10.2 is nearer 10.0 again
    path = formats_copy / "qemu-11.1" / "made_from.json"
    data = json.loads(path.read_text())
    data["releases"] = ["11.1.3"]
    path.write_text(json.dumps(data))
    assert nearest_version("10.2.2", available_versions()) == ("10.0", False)
    assert profiles.load_profile("10.2.2").version == "10.0"


def test_a_core_without_a_release_is_bounded_by_its_structures(formats_copy):
    # listed on the QOM tree (8.2+) with 64-bit feature words the core checked (up to 10.1)
    assert release_within((8, 2), (10, 1)) == ("10.0", "10.0.2")
    assert release_within(None, (8, 1)) == ("7.2", "7.2.22")
    assert release_within((10, 2), None) == ("11.1", "10.2.2")
    shutil.rmtree(formats_copy / "qemu-10.0")                       # leave-one-out
    profiles._load_json.cache_clear()
    # 11.1 was made from 10.2.2, one release above the range; 7.2 is a whole year below
    assert release_within((8, 2), (10, 1)) == ("11.1", "10.2.2")


def test_a_derived_layout_gives_its_bounds():
    from vdecode.sources.qemu_core import _bounds_text, _release_bounds
    from vdecode.sources.qemu_core.layout import load_layout

    lay = load_layout("x86_64", "7.2")
    data = json.loads(json.dumps(lay.data))
    data["derived"] = {"template": "t", "fields": {
        "VirtIODevice.host_features": {"offset": 184, "confidence": "checked", "evidence": ""}}}

    class Derived:
        pass
    d = Derived()
    d.data = data
    assert _release_bounds(d, "qom-tree") == ((8, 2), (10, 1))
    assert _bounds_text(((8, 2), (10, 1))) == "QEMU 8.2 to 10.1"
    assert _release_bounds(d, "virtio_list") == (None, (8, 1))
    # feature words placed by the template alone say nothing of the release
    data["derived"]["fields"]["VirtIODevice.host_features"]["confidence"] = "template"
    assert _release_bounds(d, "qom-tree") == ((8, 2), None)


def test_info_names_every_release_a_fitting_layout_was_made_from():
    """A core of a build no profile lists, read with a layout that fits it, is named by the
    releases that profile was made from (a 10.2.2 core the 11.1 layout fits was "11.1.x": a
    release the input does not say)."""
    from vdecode.sources.qemu_core import _releases_shown

    assert _releases_shown("11.1.3") == "10.2.x or 11.1.x"
    assert _releases_shown("7.2.22") == "7.2.x"
    assert _releases_shown("10.0.2") == "10.0.x"

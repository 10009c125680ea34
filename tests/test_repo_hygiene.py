"""What the repository must not hold: this machine's paths, or QEMU source files copied in.

Paths inside recorded logs (``tests/data/logs/real``, the captures' transcripts) are kept: they are
what real logs contain, and the readers are tested on them as they are.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECORDED = ("tests/data/logs/real/", "tests/data/captures", "tests/data/carve/")
MACHINE_PATH = re.compile(r"(?<![\w.$])/(work|root|home)/[\w.-]+|/tmp/vd[\w-]*")
# Lines every QEMU source file of the kinds we read starts with or contains; a copied file carries them.
QEMU_SOURCE_MARKS = ("This work is licensed under the terms of the GNU GPL", "SPDX-License-Identifier: GPL-2.0-or-later")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout (lists the repository's files)")
    return [REPO / f for f in out.splitlines() if (REPO / f).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", "replace")


def test_no_machine_specific_paths():
    hits = []
    for path in tracked_files():
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(RECORDED) or rel == "tests/test_repo_hygiene.py":
            continue
        text = text_of(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert hits == [], "\n".join(hits)


def test_no_qemu_source_copied_in():
    hits = [path.relative_to(REPO).as_posix() for path in tracked_files()
            if path.name != Path(__file__).name
            and (text := text_of(path)) is not None and any(m in text for m in QEMU_SOURCE_MARKS)]
    assert hits == []

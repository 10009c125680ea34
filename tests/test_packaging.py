"""The package list in pyproject.toml is the package tree, and the data ships inside it.

Packages are listed by hand (``formats/`` is mapped to ``vdecode.formats``), so a new subpackage
left out of the list would be missing from every wheel while the editable install still works.
tools/check_install.py builds and runs the real wheel; this catches the omission in the unit run.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_listed_packages_are_the_package_tree():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    tree = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vdecode").rglob("__init__.py")}
    assert listed - {"vdecode.formats"} == tree


def test_formats_ship_as_package_data():
    tool = pyproject()["tool"]["setuptools"]
    assert tool["package-dir"]["vdecode.formats"] == "formats"
    patterns = tool["package-data"]["vdecode.formats"]
    shipped = {p for pat in patterns for p in (REPO / "formats").glob(pat)}
    every = {p for p in (REPO / "formats").rglob("*") if p.is_file()}
    assert every == shipped, sorted(str(p.relative_to(REPO)) for p in every - shipped)

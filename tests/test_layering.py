"""Each stage imports only from itself or earlier stages (STYLE.md, "one way through")."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "vdecode"
STAGES = ["sources", "space", "virtio", "reconstruct", "render"]


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "vdecode" and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return None


def test_no_stage_imports_a_later_one():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        here = _stage(".".join(rel.parts))
        if here is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                there = _stage(name)
                if there is not None and there > here:
                    bad.append(f"{rel}: imports {name}")
    assert bad == []


def test_cli_is_the_only_module_that_exits():
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if p.name not in ("cli.py",) and "sys.exit" in p.read_text()]
    assert offenders == []

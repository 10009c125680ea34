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
    # command_line.py is the command line's shared half: the installed entry point (entry.py)
    # runs the plain ``vdecode DUMP`` form without click (issue 27), and both end the process there
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if p.name not in ("cli.py", "command_line.py") and "sys.exit" in p.read_text()]
    assert offenders == []


# Inside reconstruct/: the QMP replies and the ring matching stand alone; the state stage (the
# log's state moved to the dump instant, the session) uses both; the post-mortem (findings, view,
# bundle evidence) sits on top.
RECONSTRUCT_RANK = {"qmp": 0, "rings": 0, "timeline": 0, "state": 1, "postmortem": 2}


def _imports(path: Path, *, nested: bool = True) -> set[str]:
    """Modules ``path`` imports by absolute name (function-level imports too, when ``nested``)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if nested else tree.body
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def test_reconstruct_subpackages_import_downwards():
    bad = []
    for mod, path in _modules().items():
        parts = mod.split(".")
        if parts[:2] != ["vdecode", "reconstruct"] or len(parts) < 4:
            continue
        here = parts[2]
        for name in _imports(path):
            there = name.split(".")
            if there[:2] != ["vdecode", "reconstruct"] or len(there) < 3 or there[2] == here:
                continue
            if RECONSTRUCT_RANK.get(there[2], 99) >= RECONSTRUCT_RANK[here]:
                bad.append(f"{mod}: imports {name}")
    assert bad == []
    assert {p.name for p in (PKG / "reconstruct").iterdir() if p.suffix == ".py"} == {"__init__.py"}, \
        "reconstruct/ holds subpackages only"


def test_no_import_cycles():
    """Not even through imports deferred into functions: a cycle is two modules that each need the
    other, whatever the moment they import."""
    mods = _modules()
    graph = {m: {n for n in _imports(p) if n in mods and n != m and not m.startswith(n + ".")}
             for m, p in mods.items()}
    graph = {m: {n for n in deps if not mods[n].name == "__init__.py"} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []

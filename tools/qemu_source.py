"""Readers for a QEMU source tree: C constants, ``#ifdef`` selection, functions and their calls, QAPI schema
files. Used by ``tools/gen_formats.py`` (tables) and ``tools/layout_probe/build_probe.py`` (struct cuts).

Nothing here holds QEMU text: every reader takes the text of a file from the tree the user names
(``apt-get source qemu``, a git checkout) and returns facts (names, numbers, strings).
"""

from __future__ import annotations

import ast
import gzip
import operator
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ("SourceError", "Tree", "strip_comments", "c_strings", "read_constants", "preprocess",
           "tested_symbols", "function_body", "find_calls", "struct_definition", "parse_qapi",
           "camel_to_upper")


class SourceError(Exception):
    """The tree's text does not have the shape a reader expects (the message names file and what)."""


# --- the tree --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tree:
    """A QEMU source tree: ``VERSION``, and for a Debian source package its changelog and patches.

    ``upstream`` is the upstream release the tree is: Debian's upstream version (``1:7.2+dfsg-7`` ->
    ``7.2.0``; Debian's stable updates are patches on top) or else the ``VERSION`` file.
    """

    root: Path
    version: str                    # VERSION (7.2.22 for Debian's patched 7.2 tree)
    upstream: str                   # 7.2.0, 10.0.2
    debian: str | None              # Debian package version, when debian/changelog is there
    debian_patches: tuple[str, ...]  # debian/patches/series, in order

    @classmethod
    def open(cls, root: Path) -> "Tree":
        root = Path(root)
        if not (root / "VERSION").is_file() or not (root / "hw" / "virtio").is_dir():
            raise SourceError(f"{root}: not a QEMU source tree (no VERSION or hw/virtio/)")
        version = (root / "VERSION").read_text().strip()
        debian, patches = None, ()
        changelog = root / "debian" / "changelog"
        if changelog.is_file():
            m = re.match(r"\S+ \(([^)]+)\)", changelog.read_text(errors="replace"))
            if not m:
                raise SourceError(f"{changelog}: no version on the first line")
            debian = m.group(1)
            series = root / "debian" / "patches" / "series"
            if series.is_file():
                patches = tuple(ln.split()[0] for ln in series.read_text().splitlines()
                                if ln.strip() and not ln.lstrip().startswith("#"))
            applied = root / ".pc" / "applied-patches"
            done = applied.read_text().split() if applied.is_file() else []
            if patches and done != list(patches):
                raise SourceError(f"{root}: debian/patches/series is not applied (run 'quilt push -a' "
                                  "or unpack with dpkg-source -x)")
        if debian:
            up = debian.split(":", 1)[-1].rsplit("-", 1)[0].split("+")[0].split("~")[0]
            parts = up.split(".")
            upstream = ".".join(parts + ["0"] * (3 - len(parts)))
        else:
            upstream = version
        return cls(root, version, upstream, debian, patches)

    def text(self, rel: str) -> str:
        path = self.root / rel
        if not path.is_file():
            raise SourceError(f"{self.root}: no {rel}")
        return path.read_text(errors="replace")

    def has(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    @property
    def label(self) -> str:
        """How ``source`` names this tree."""
        if self.debian:
            return (f"Debian qemu {self.debian} source (upstream {self.upstream} + debian/patches, "
                    f"VERSION {self.version})")
        return f"qemu v{self.version} source"

    def patch_text(self, name: str) -> str:
        path = self.root / "debian" / "patches" / name
        if name.endswith(".gz"):
            return gzip.decompress(path.read_bytes()).decode(errors="replace")
        return path.read_text(errors="replace")


# --- C text ----------------------------------------------------------------------------------------

_STR = r'"(?:[^"\\\n]|\\.)*"'
_CHR = r"'(?:[^'\\\n]|\\.)*'"


def strip_comments(text: str) -> str:
    """``text`` with ``/* */`` and ``//`` comments replaced by a space (string literals kept)."""
    out = []
    for m in re.finditer(rf"{_STR}|{_CHR}|/\*.*?\*/|//[^\n]*|[^\"'/]+|.", text, re.S):
        tok = m.group(0)
        if tok.startswith("/*"):
            out.append(" " + "\n" * tok.count("\n"))
        elif tok.startswith("//"):
            out.append(" ")
        else:
            out.append(tok)
    return "".join(out)


def c_strings(text: str) -> str:
    """The text of adjacent C string literals (``"a " "b"`` -> ``a b``).

    >>> c_strings('"Parameter \\'%s\\' " "is missing"')
    "Parameter '%s' is missing"
    """
    parts = re.findall(_STR, text)
    return "".join(bytes(p[1:-1], "ascii").decode("unicode_escape") for p in parts)


def is_string_literal(expr: str) -> bool:
    return bool(expr.strip()) and re.fullmatch(rf"\s*(?:{_STR}\s*)+", expr) is not None


_BINOPS = {ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
           ast.BitAnd: operator.and_, ast.Add: operator.add, ast.Sub: operator.sub,
           ast.Mult: operator.mul}


def _eval_int(expr: str, known: dict[str, int]) -> int | None:
    """A C integer constant expression of literals, known names and ``<< >> | & + - * ~``; else None."""
    expr = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\b", r"\1", expr.strip())
    expr = re.sub(r"\(\s*(?:unsigned\s+)?(?:int|long|uint\d+_t)\s*\)", "", expr)
    if not expr or "?" in expr:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in known:
                raise KeyError(node.id)
            return known[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return ~v if isinstance(node.op, ast.Invert) else -v if isinstance(node.op, ast.USub) else v
        raise KeyError(type(node).__name__)

    try:
        return ev(tree)
    except KeyError:
        return None


def read_constants(texts: list[str]) -> dict[str, int]:
    """Integer ``#define NAME VALUE`` macros and ``enum`` members of C files, in order.

    Object-like macros only; a value naming an earlier constant is resolved. An enum member without
    ``=`` is the previous one plus one. Later files do not override earlier ones (the caller puts the
    file whose value counts first).

    >>> read_constants(["#define A 3\\n#define B (1 << A)\\nenum e { X, Y = 5, Z };"])
    {'A': 3, 'B': 8, 'X': 0, 'Y': 5, 'Z': 6}
    """
    out: dict[str, int] = {}
    for raw in texts:
        text = strip_comments(raw)
        text = re.sub(r"\\\n", " ", text)
        pending: list[tuple[str, str]] = []
        for name, value in re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+([^\n]+)", text, re.M):
            pending.append((name, value))
        for body in re.findall(r"\benum\b\s*\w*\s*\{([^{}]*)\}", text):
            nxt = 0
            for item in body.split(","):
                item = item.strip()
                if not item or item.startswith("#"):
                    continue
                m = re.fullmatch(r"(\w+)\s*(?:=\s*(.+))?", item, re.S)
                if not m:
                    break
                if m.group(2) is not None:
                    v = _eval_int(m.group(2), out)
                    if v is None:
                        break
                    nxt = v
                out.setdefault(m.group(1), nxt)
                nxt += 1
        for _ in range(3):                        # defines naming defines given later in the file
            for name, value in pending:
                if name not in out:
                    v = _eval_int(value, out)
                    if v is not None:
                        out[name] = v
    return out


def tested_symbols(text: str) -> list[tuple[str, str]]:
    """``(directive, symbol)`` of every ``#ifdef``/``#ifndef`` in the text, in order."""
    return re.findall(r"^\s*#\s*(ifdef|ifndef)\s+(\w+)", text, re.M)


def preprocess(text: str, defined: set[str]) -> str:
    """Keep the lines that ``#ifdef``/``#ifndef``/``#else``/``#endif`` select with ``defined``.

    Other conditionals (``#if EXPR``) are refused: the tables this reads have none.
    """
    stack: list[list[bool]] = []           # [this branch on, any branch taken]
    lines = []
    for line in text.splitlines():
        m = re.match(r"\s*#\s*(ifdef|ifndef)\s+(\w+)", line)
        if m:
            on = (m.group(2) in defined) == (m.group(1) == "ifdef")
            stack.append([on, on])
            continue
        if re.match(r"\s*#\s*else\b", line):
            if not stack:
                raise SourceError("#else without #if")
            stack[-1][0] = not stack[-1][1]
            continue
        if re.match(r"\s*#\s*endif\b", line):
            if not stack:
                raise SourceError("#endif without #if")
            stack.pop()
            continue
        if re.match(r"\s*#\s*(if|elif)\b", line):
            raise SourceError(f"unsupported conditional: {line.strip()}")
        if all(s[0] for s in stack):
            lines.append(line)
    if stack:
        raise SourceError("unterminated #if")
    return "\n".join(lines)


def _match_close(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket that closes ``text[start]`` (strings and chars skipped)."""
    depth = 0
    for m in re.finditer(rf"{_STR}|{_CHR}|[{re.escape(open_)}{re.escape(close)}]", text[start:]):
        tok = m.group(0)
        if tok == open_:
            depth += 1
        elif tok == close:
            depth -= 1
            if depth == 0:
                return start + m.end()
    raise SourceError(f"unbalanced {open_}{close}")


def function_body(text: str, name: str) -> str:
    """The definition of C function ``name`` (header line to closing brace); comments removed.

    :raises SourceError: when the file defines no such function.
    """
    code = strip_comments(text)
    for m in re.finditer(rf"^[A-Za-z_][^\n;{{}}=]*?\b{re.escape(name)}\s*\(", code, re.M):
        paren = m.end() - 1
        end = _match_close(code, paren, "(", ")")
        rest = code[end:]
        brace = len(rest) - len(rest.lstrip())
        if rest[brace:brace + 1] == "{":
            stop = _match_close(code, end + brace, "{", "}")
            return code[m.start():stop]
    raise SourceError(f"function {name} not defined")


def split_args(arglist: str) -> list[str]:
    """Top-level comma-separated arguments of a call's parenthesised text (without the parens)."""
    args, depth, cur = [], 0, []
    for m in re.finditer(rf"{_STR}|{_CHR}|[(){{}}\[\],]|[^\"'(){{}}\[\],]+", arglist):
        tok = m.group(0)
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
        if tok == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(tok)
    if "".join(cur).strip():
        args.append("".join(cur).strip())
    return args


def find_calls(body: str, names: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """Calls of any of ``names`` in a function body, in order: ``(name, [argument text, ...])``."""
    out = []
    pattern = rf"\b({'|'.join(map(re.escape, names))})\s*\("
    pos = 0
    while True:
        m = re.compile(pattern).search(body, pos)
        if not m:
            return out
        end = _match_close(body, m.end() - 1, "(", ")")
        out.append((m.group(1), split_args(body[m.end():end - 1])))
        pos = end


def struct_definition(text: str, name: str) -> str:
    """The text of ``struct NAME { ... };`` or ``typedef struct NAME { ... } NAME;`` in a file."""
    code = strip_comments(text)
    m = re.search(rf"^(typedef\s+)?struct\s+{re.escape(name)}\s*\{{", code, re.M)
    if not m:
        raise SourceError(f"struct {name} not defined")
    end = _match_close(code, m.end() - 1, "{", "}")
    semi = code.index(";", end)
    return code[m.start():semi + 1]


# --- QAPI ------------------------------------------------------------------------------------------

def parse_qapi(text: str) -> list[dict]:
    """The top-level expressions of a QAPI schema file, in order (comments dropped).

    QAPI is JSON with single-quoted strings and ``#`` comments.

    >>> parse_qapi("# doc\\n{ 'struct': 'A', 'data': { '*b': ['str'] } }")
    [{'struct': 'A', 'data': {'*b': ['str']}}]
    """
    toks: list = []
    for m in re.finditer(r"#[^\n]*|\s+|'((?:[^'\\]|\\.)*)'|(true|false)\b|([{}\[\]:,])|(.)", text):
        if m.group(1) is not None:
            toks.append(("s", m.group(1)))
        elif m.group(2):
            toks.append(("v", m.group(2) == "true"))
        elif m.group(3):
            toks.append(m.group(3))
        elif m.group(4):
            raise SourceError(f"QAPI: unexpected character {m.group(4)!r} at {m.start()}")
    pos = 0

    def value():
        nonlocal pos
        tok = toks[pos]
        pos += 1
        if tok == "{":
            obj: dict = {}
            while toks[pos] != "}":
                key = toks[pos][1]
                if toks[pos + 1] != ":":
                    raise SourceError("QAPI: ':' expected")
                pos += 2
                obj[key] = value()
                if toks[pos] == ",":
                    pos += 1
            pos += 1
            return obj
        if tok == "[":
            arr = []
            while toks[pos] != "]":
                arr.append(value())
                if toks[pos] == ",":
                    pos += 1
            pos += 1
            return arr
        if isinstance(tok, tuple):
            return tok[1]
        raise SourceError(f"QAPI: unexpected {tok!r}")

    exprs = []
    while pos < len(toks):
        exprs.append(value())
    return exprs


def camel_to_upper(name: str) -> str:
    """QAPI's enum C name rule (scripts/qapi/common.py camel_to_upper): ``CommandNotFound`` -> ``COMMAND_NOT_FOUND``.

    >>> camel_to_upper("GenericError"), camel_to_upper("KVMMissingCap")
    ('GENERIC_ERROR', 'KVM_MISSING_CAP')
    """
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).upper()

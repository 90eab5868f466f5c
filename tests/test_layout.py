"""The layout of the code itself: every function fits on a screen, every module says its role first.

A screen is :data:`SCREEN` lines of code: a function's lines from its ``def`` to its end, without
its docstring, comments and blank lines (nested functions count in the function that holds them,
and again on their own). The modules are read as text with :mod:`ast` and :mod:`tokenize`;
nothing is imported.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aesr_sci"
SCREEN = 50

# Functions allowed to stay longer than a screen, by file (relative to the repository root) and
# qualified name: empty now, kept for work in progress that must land before its function is
# split. The test fails when an entry is no longer needed, so it cannot rot.
KNOWN_LONG: dict[str, set[str]] = {}

_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def code_lines(source: str) -> set[int]:
    """The numbers of the lines of ``source`` that hold code (not only comments or blanks)."""
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _NOT_CODE:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(node: ast.AST) -> set[int]:
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return set(range(first.lineno, first.end_lineno + 1))  # type: ignore[operator]
    return set()


def functions(
    tree: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method of ``tree`` (nested ones too) with its qualified name."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def function_lengths(source: str) -> dict[str, int]:
    """Lines of code of each function of ``source``, by qualified name (docstrings, comments and
    blank lines left out)."""
    code = code_lines(source)
    lengths: dict[str, int] = {}
    for name, node in functions(ast.parse(source)):
        span = set(range(node.lineno, node.end_lineno + 1)) - _docstring_lines(node)  # type: ignore[operator]
        lengths[name] = max(lengths.get(name, 0), len(span & code))
    return lengths


def long_functions() -> dict[str, dict[str, int]]:
    """The functions of the package longer than a screen: ``{file: {qualified name: lines}}``."""
    found: dict[str, dict[str, int]] = {}
    for path in _modules():
        long = {n: k for n, k in function_lengths(path.read_text(encoding="utf-8")).items() if k > SCREEN}
        if long:
            found[_name(path)] = long
    return found


def test_the_measure_leaves_out_docstrings_comments_and_blank_lines() -> None:
    source = '''
def f(x):
    """A docstring
    of three lines.
    """
    # a comment

    y = x + 1  # counted
    s = """a string
    of two lines"""
    return y


class C:
    def m(self):
        def inner():
            return 1
        return inner()
'''
    assert function_lengths(source) == {"f": 5, "C.m": 4, "C.m.inner": 2}


def test_no_function_is_longer_than_a_screen() -> None:
    found = long_functions()
    new = {
        f"{file}: {name} ({lines} lines)"
        for file, names in found.items()
        for name, lines in names.items()
        if name not in KNOWN_LONG.get(file, set())
    }
    assert not new, f"longer than {SCREEN} lines of code; split into named phases:\n" + "\n".join(sorted(new))


def test_every_known_long_function_is_still_long() -> None:
    found = long_functions()
    stale = {
        f"{file}: {name}"
        for file, names in KNOWN_LONG.items()
        for name in names
        if name not in found.get(file, {})
    }
    assert not stale, "no longer too long, remove from KNOWN_LONG:\n" + "\n".join(sorted(stale))


_SENTENCE = re.compile(r"^(?:[A-Z]|``|:|aesr-sci\b).*\S.*\.$")


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_module_docstring_opens_with_a_sentence(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring, f"{_name(path)}: no module docstring naming its role"
    first = docstring.splitlines()[0].strip()
    assert _SENTENCE.match(first) and len(first.split()) >= 3, (
        f"{_name(path)}: the docstring's first line should be one sentence naming the module's role "
        f"(capital first, full stop last), got {first!r}"
    )

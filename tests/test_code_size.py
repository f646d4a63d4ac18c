"""No function in ``src/`` over 80 lines of code (DEVELOPERS.md; issue 17, item 5).

Lines of code: lines of the function (decorators and signature included) that hold code — blank lines, comment-only
lines and docstrings do not count; a nested function counts towards its own size and towards the function holding it.
``ALLOWED`` names today's offenders with their size: they may not grow; drop an entry once its function is split.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LIMIT = 80

#: ``"path/relative/to/src.py::Qualified.name"`` → lines of code today (shrinking them is later work, issue 17).
ALLOWED: dict[str, int] = {}


def _code_lines(source: str) -> set[int]:
    """Line numbers that hold a token other than a comment or a line break (a multi-line string: all its lines)."""
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def function_sizes(path: Path) -> dict[str, int]:
    """``qualified name → lines of code`` of every function and method in ``path``."""
    source = path.read_text()
    tree = ast.parse(source)
    code = _code_lines(source) - _docstring_lines(tree)
    sizes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                sizes[name] = len(code & set(range(start, child.end_lineno + 1)))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return sizes


def all_sizes() -> dict[str, int]:
    return {
        f"{path.relative_to(SRC).as_posix()}::{name}": size
        for path in sorted(SRC.rglob("*.py"))
        for name, size in function_sizes(path).items()
    }


def test_counting_excludes_docstrings_comments_and_blank_lines(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        'def f(\n    a,\n):\n    """Doc\n\n    more doc."""\n    # a comment\n\n    x = """two\nlines"""\n'
        "    return a\n\n\nclass C:\n    @property\n    def g(self):\n        def h():\n            return 1\n"
        "        return h()\n"
    )
    assert function_sizes(path) == {"f": 6, "C.g": 5, "C.g.h": 2}


def test_no_function_in_src_exceeds_80_lines_of_code():
    sizes = all_sizes()
    too_long = {name: size for name, size in sizes.items() if size > LIMIT and name not in ALLOWED}
    assert not too_long, f"functions over {LIMIT} lines of code (split them): {too_long}"
    grown = {name: (ALLOWED[name], sizes[name]) for name in ALLOWED if sizes.get(name, 0) > ALLOWED[name]}
    assert not grown, f"allow-listed functions grew (allowed, now): {grown}"


def test_no_sys_path_edits_in_src():
    """Issue 17 item 5: the package never edits ``sys.path`` (a child process gets ``PYTHONPATH`` instead)."""
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "sys.path." in line.split("#", 1)[0]
    ]
    assert not offenders, f"sys.path edited in {offenders}"

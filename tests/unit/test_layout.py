"""The package's shape, checked: what the wheel ships, no import cycle, SQL only under db/.

These hold the layout the README's "How it is built" section describes; a change that breaks
one says which module crossed which line.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dbdict_worker"
#: The one subpackage that may build SQL (the alembic scripts live inside it).
SQL_HOME = PACKAGE / "db"


def _modules() -> dict[str, Path]:
    """{dotted module name: file} for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports, at any depth of the file (an import inside a
    function is still an edge: that is how a cycle hides), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # A package's __init__ that imports its own children is not a cycle with them.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


_SQL = re.compile(
    r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\b.*\bSET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|VIEW)"
    r"|DROP\s+(TABLE|VIEW|INDEX)|ALTER\s+TABLE|VACUUM|ANALYZE\s+\w|EXPLAIN"
    r"|^\s*(LISTEN|NOTIFY)\s|pg_[a-z_]+\()", re.S)
_DRIVERS = ("sqlalchemy", "psycopg2", "psycopg", "sqlite3", "alembic")


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _sql_outside_db(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstring_nodes(tree)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in _DRIVERS:
                problems.append(f"{path.relative_to(root)}:{node.lineno}: imports {name}")
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docs and _SQL.search(node.value)):
            problems.append(f"{path.relative_to(root)}:{node.lineno}: SQL in a string: "
                            f"{node.value[:60]!r}")
    return problems


def test_no_sql_outside_the_db_subpackage():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if SQL_HOME not in path.parents:
            problems += _sql_outside_db(path)
    assert problems == []


def test_the_sql_check_sees_sql(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('import sqlalchemy as sa\nQ = "DELETE FROM jobs WHERE id = 1"\n')
    assert len(_sql_outside_db(bad, root=tmp_path)) == 2


def test_no_module_is_a_room_of_its_own():
    """Small modules with one job each: nothing much past 600 lines."""
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 620}
    assert long == {}


@pytest.mark.slow
def test_the_wheel_ships_the_product_not_the_proof_tooling(tmp_path):
    """The chaos soak, its checks and the private test servers stay in the checkout."""
    # Built from a copy, so setuptools' build/ directory does not land in the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
        check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("dbdict_worker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dbdict_worker/job/runner.py" in names
    assert "dbdict_worker/db/migrations/env.py" in names
    assert "dbdict_worker/db/migrations/script.py.mako" in names
    assert any(n.startswith("dbdict_worker/db/migrations/versions/0001") for n in names)
    shipped = [n for n in names if n.endswith(".py")]
    leaked = [n for n in shipped
              if not n.startswith("dbdict_worker/")
              or re.search(r"chaos|soak|pgserver|pgcluster|conftest|/tests?/", n)]
    assert leaked == []

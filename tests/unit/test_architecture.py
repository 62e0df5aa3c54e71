"""Imports point one way: services -> projections -> events; the core does no I/O."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "events": {"projections", "services", "asyncio", "aiokafka", "faststream", "fastapi", "socket"},
    "projections": {"services", "asyncio", "aiokafka", "faststream", "fastapi", "socket", "time"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_modules(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_check_sees_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import asyncio\nfrom services.x import y\n")
    assert imported_modules(module) == {"asyncio", "services"}

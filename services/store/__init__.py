"""The read-model store (see :mod:`services.store.base` for the interface).

:func:`open_store` picks the backend from the settings: PostgreSQL when
``SLATRACK_DATABASE_URL`` is set, else SQLite in ``SLATRACK_DATA_DIR``.
"""

import logging

from services.config import Settings
from services.store.base import (
    BatchWrite,
    CustomerRow,
    GenerationBehind,
    GenerationChanged,
    ReadModelStore,
    Signal,
    StaleBatch,
    StoredEvent,
    StoreError,
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
    "StoreUnavailable",
    "StoredEvent",
    "TicketQuery",
    "TicketRow",
    "open_store",
]

log = logging.getLogger(__name__)

SQLITE_FILE = "slatrack.db"


def open_store(settings: Settings, *, migrate: bool = True) -> ReadModelStore:
    """The configured store, its schema brought up to date unless ``migrate=False``.

    Migrating is idempotent and safe from several processes at once, so every
    role (worker, API, rebuild) simply does it at start.
    """
    store: ReadModelStore
    if settings.database_url is not None:
        try:
            # Imported here: psycopg is needed only by deployments that use PostgreSQL.
            from services.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"SLATRACK_DATABASE_URL is set but PostgreSQL support is missing ({exc}); "
                "pip install 'psycopg[binary]'"
            ) from exc
        store = PostgresStore(settings.database_url.get_secret_value())
    else:
        from services.store.sqlite import SqliteStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(settings.data_dir / SQLITE_FILE)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store

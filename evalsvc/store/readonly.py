"""A store connection that cannot write: the dashboard only reads.

PostgreSQL: connect as a role that only has SELECT (`evalsvc db readonly-role`), given in
``dashboard.store`` or EVALSVC_DASHBOARD_STORE; every session is also read-only
(``default_transaction_read_only``), so even the owner's URL cannot write through the dashboard.
SQLite: ``PRAGMA query_only`` on every connection. The schema is never migrated from here.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from evalsvc.errors import StoreError
from evalsvc.store.db import _safe, current_revision, head_revision

STORE_ENV = "EVALSVC_DASHBOARD_STORE"


def dashboard_url(cfg) -> str:
    """The dashboard's own URL (a read-only role) if configured, else the store's."""
    return os.environ.get(STORE_ENV) or cfg.dashboard.store or cfg.store_url()


def open_readonly(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _query_only(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA query_only=ON")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, connect_args={"options": "-c default_transaction_read_only=on"})
    try:
        rev = current_revision(engine)
    except SQLAlchemyError as exc:
        raise StoreError(f"the dashboard cannot read the store at {_safe(url)}: {getattr(exc, 'orig', exc)}") from None
    if rev != head_revision():
        raise StoreError(f"the store at {_safe(url)} is at schema revision {rev or 'none'} and the dashboard needs "
                         f"{head_revision()}: run `evalsvc db upgrade` (SQLite: any `evalsvc run`) first; the dashboard "
                         "never changes the store")
    return engine

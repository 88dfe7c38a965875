"""Connecting to the store and keeping its schema current.

SQLite (the embedded default) is migrated automatically on first use: there is no
one to run a command. PostgreSQL is migrated only by ``evalsvc db upgrade``, a
deliberate step in production; until then every command says so and stops.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from evalsvc.errors import StoreError
from evalsvc.store.locks import migration_lock

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# TCP keepalives on both ends of every PostgreSQL session (idle 10 s, then 6 probes 5 s apart, and 40 s for unacknowledged
# data): a worker whose node was lost is noticed by the server within about a minute, so its session ends and the run
# locks it held are free for the rerun elsewhere; the worker likewise notices a server that vanished.
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 6,
                 "tcp_user_timeout": 40000}
PG_SERVER_KEEPALIVES = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=6 -c tcp_user_timeout=40000"


def make_engine(url: str) -> Engine:
    from sqlalchemy.engine import make_url

    kwargs: dict = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:  # a server restarted mid-run leaves dead pooled connections: test each one before use
        kwargs["pool_pre_ping"] = True
        query = make_url(url).query
        kwargs["connect_args"] = {k: v for k, v in PG_KEEPALIVES.items() if k not in query}
        if "options" not in query:
            kwargs["connect_args"]["options"] = PG_SERVER_KEEPALIVES
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    return engine


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(url), revision)
    except OperationalError as exc:
        raise StoreError(f"cannot reach the store at {_safe(url)}: {exc.orig}") from None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def open_engine(url: str) -> Engine:
    """An engine on a store whose schema is at head (SQLite is upgraded in place)."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        # The first connection switches a new file to WAL, which two processes must not do at once (SQLite answers
        # "database is locked" at once, without waiting): look and migrate under the file lock beside the database.
        with migration_lock(engine, _safe(url)):
            if _revision(engine, url) != head_revision():
                upgrade(url)
        return engine
    rev = _revision(engine, url)
    if rev != head_revision():
        raise StoreError(
            f"the store at {_safe(url)} is at schema revision {rev or 'none'}, this evalsvc needs "
            f"{head_revision()}; run `evalsvc db upgrade` first"
        )
    return engine


def _revision(engine: Engine, url: str) -> str | None:
    try:
        return current_revision(engine)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reach the store at {_safe(url)}: {getattr(exc, 'orig', exc)}") from None


def _safe(url: str) -> str:
    """The URL as messages show it: the password hidden, in user-info or as a ``password`` query parameter (libpq
    takes both; EVALSVC_STORE may carry either)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    query = {k: ("***" if k.lower() == "password" else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")

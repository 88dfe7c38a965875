"""A PostgreSQL role that can read the store and nothing else (for `evalsvc dashboard`)."""

from __future__ import annotations

import re

from sqlalchemy import Connection, Engine, text

from evalsvc.errors import StoreError

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def create_readonly_role(engine: Engine, name: str, password: str | None = None) -> None:
    """Create (or refresh) ``name`` with SELECT on every table, now and in future migrations.

    Tables created later by the same owner (new migrations, pg_partman's partitions) are covered
    by default privileges; partitions are read through their parent, which is what the grant is on.
    The role's sessions are also read-only by default, a second lock should a grant ever be too wide.
    """
    if engine.dialect.name != "postgresql":
        raise StoreError("read-only roles are a PostgreSQL feature; on SQLite the dashboard opens the file read-only")
    if not ROLE_NAME.match(name):
        raise StoreError(f"role name {name!r}: use lower-case letters, digits and _ (at most 63), e.g. evalsvc_dashboard")
    with engine.begin() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar()
        if not exists:
            conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
        if password is not None:  # a SCRAM verifier, never the password: a server logging DDL would keep it in clear
            verifier = _scram_verifier(conn, name, password)
            conn.exec_driver_sql(f"ALTER ROLE \"{name}\" PASSWORD '{verifier.replace(chr(39), chr(39) * 2)}'")
        database = conn.execute(text("SELECT current_database()")).scalar()
        schema = conn.execute(text("SELECT current_schema()")).scalar()
        for statement in (f'GRANT CONNECT ON DATABASE "{database}" TO "{name}"',
                          f'GRANT USAGE ON SCHEMA "{schema}" TO "{name}"',
                          f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{name}"',
                          f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT SELECT ON TABLES TO "{name}"',
                          f'ALTER ROLE "{name}" SET default_transaction_read_only = on'):
            conn.exec_driver_sql(statement)


def _scram_verifier(conn: Connection, name: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` for role ``name``, computed here by libpq (``PQencryptPasswordConn``,
    what psql's \\password does): the server stores it as is and the password itself never travels or gets logged."""
    pgconn = getattr(conn.connection.dbapi_connection, "pgconn", None)
    if pgconn is None:
        raise StoreError("setting a role's password needs the psycopg driver (a store URL postgresql+psycopg://...), "
                         "which computes its SCRAM verifier here; or set it yourself with psql's \\password")
    return pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()

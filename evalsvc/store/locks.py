"""Every lock evalsvc takes, in one place; each dies with the process (or session) that holds it.

- ``RunLocks``: a run key executes in one process at a time; ``RunLocks(engine, "firings")`` likewise holds a
  firing for the life of the process executing it, so a firing left ``running`` with its lock free is one whose
  process is gone.
- ``single_scheduler``: one `evalsvc serve` acts per store, holding a ``SchedulerLease`` it keeps proving.
- ``migration_lock``: two processes opening a new SQLite store at once do not both migrate it.

On PostgreSQL they are session advisory locks; on SQLite, POSIX locks on files beside the
database (``<database>.runs.lock``, ``.scheduler.lock``, ``.migrate.lock``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, ClassVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from evalsvc.errors import EvalsvcError, StoreError

log = logging.getLogger(__name__)

SCHEDULER_KEY = 0x65766C73  # "evls": pg_advisory_lock(bigint) of the one scheduler


class SchedulerBusy(EvalsvcError):
    """Another `evalsvc serve` holds this store's scheduler lock."""


def _beside(engine: Engine, suffix: str) -> Path | None:
    """``<database><suffix>`` for a SQLite file store; None for PostgreSQL or an in-memory store."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        return None
    return Path(f"{os.path.realpath(db)}{suffix}")


@contextmanager
def _flock(path: Path, wait: bool) -> Iterator[IO[str]]:
    """Hold an exclusive lock on the whole of ``path`` for the block; BlockingIOError when taken and not ``wait``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def migration_lock(engine: Engine, url_shown: str) -> Iterator[None]:
    """Serialise the first migration of a SQLite store (a no-op elsewhere)."""
    path = _beside(engine, ".migrate.lock")
    if path is None:
        yield
        return
    if not path.parent.is_dir():  # SQLite would not create it either: say so rather than make it
        raise StoreError(f"cannot reach the store at {url_shown}: the folder {path.parent} does not exist; "
                         "create it, or point `store:` at a file in an existing folder")
    try:
        cm = _flock(path, wait=True)
        cm.__enter__()
    except OSError as exc:
        raise StoreError(f"cannot reach the store at {url_shown}: {exc}") from None
    try:
        yield
    finally:
        cm.__exit__(None, None, None)


class SchedulerLease:
    """The one-scheduler lock as a lease its holder keeps proving (``verify``, called before every firing and on
    every tick of `evalsvc serve`).

    On PostgreSQL it is a session advisory lock, which a server restart or a dropped connection releases without a
    word: ``verify`` looks for it in ``pg_locks`` on its own connection, and after losing the connection takes it again
    on a new one. If another process took it in between, the lease is ``lost`` for good and the holder must stop
    firing. While the store cannot be reached it is not verified (no firing can work then anyway) but not lost.
    On SQLite the lock is a POSIX lock on a local file, which only the holder's death releases."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lost = False
        self._conn: Connection | None = None
        self._guard = threading.Lock()

    def take(self, wait: bool) -> None:
        self._conn = self.engine.connect()
        if wait:
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SCHEDULER_KEY})
        elif not self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_KEY}).scalar():
            self._close()
            raise SchedulerBusy("another `evalsvc serve` is already scheduling on this store (PostgreSQL advisory "
                                "lock held); stop it first, or pass --wait to take over when it stops")
        self._conn.commit()

    def verify(self) -> bool:
        """True while this process holds the lock now (taking it again after a lost connection, if it is free)."""
        if self.engine.dialect.name != "postgresql":
            return True
        with self._guard:
            if self.lost:
                return False
            try:
                if self._conn is not None and self._held(self._conn):
                    return True
            except SQLAlchemyError:
                pass
            self._close()
            try:
                conn = self.engine.connect()
            except SQLAlchemyError as exc:
                log.warning("cannot verify the scheduler lock (the store is unreachable): %s", getattr(exc, "orig", exc))
                return False
            try:
                got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_KEY}).scalar())
                conn.commit()
            except SQLAlchemyError as exc:
                conn.close()
                log.warning("cannot verify the scheduler lock: %s", getattr(exc, "orig", exc))
                return False
            if not got:
                conn.close()
                self.lost = True
                log.error("lost the scheduler lock: another `evalsvc serve` took it while the connection to the store "
                          "was down; this one fires nothing more")
                return False
            self._conn = conn
            log.warning("the connection holding the scheduler lock was lost; took the lock again")
            return True

    def release(self) -> None:
        with self._guard:
            if self._conn is not None and not self.lost:
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEDULER_KEY})
                    self._conn.commit()
                except SQLAlchemyError:  # the server went away, and the lock with it
                    pass
            self._close()

    @staticmethod
    def _held(conn: Connection) -> bool:
        """The bigint form of an advisory lock shows in pg_locks as (classid, objid) = (high, low 32 bits), objsubid 1."""
        n = conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                              "AND pid = pg_backend_pid() AND classid = :hi AND objid = :lo AND objsubid = 1"),
                         {"hi": SCHEDULER_KEY >> 32, "lo": SCHEDULER_KEY & 0xFFFFFFFF}).scalar()
        conn.commit()
        return bool(n)

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError:
                pass
            self._conn = None


@contextmanager
def single_scheduler(engine: Engine, wait: bool = False) -> Iterator[SchedulerLease]:
    """Hold the store's scheduler lock for the life of the block (or raise SchedulerBusy); yields its lease."""
    lease = SchedulerLease(engine)
    if engine.dialect.name == "postgresql":
        lease.take(wait)
        try:
            yield lease
        finally:
            lease.release()
        return
    lock_path = _beside(engine, ".scheduler.lock") or Path(".evalsvc/scheduler.lock")
    try:
        cm = _flock(lock_path, wait)
        fh = cm.__enter__()
    except BlockingIOError:
        holder = lock_path.read_text().strip() or "unknown"
        raise SchedulerBusy(f"another `evalsvc serve` (pid {holder}) is already scheduling on this store ({lock_path}); "
                            "stop it first, or pass --wait to take over when it stops") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield lease
    finally:
        cm.__exit__(None, None, None)


_held: set[tuple[str, int]] = set()  # (store, run id) locked by this process, whichever thread
_guard = threading.Lock()
_lock_files: dict[str, IO[str]] = {}  # one handle per lock file, never closed: closing any drops the process's locks


class RunLocks:
    """Execution locks on runs: a run key executes in one process at a time.

    A lock dies with its holder, so a SIGKILLed run is resumable at once: on PostgreSQL a
    session advisory lock on one connection held for the block; on SQLite a POSIX record
    lock on byte ``run id`` of ``<database>.runs.lock``. Threads of one process are told
    apart by a set of held keys, since neither kind of lock excludes its own process.
    """

    # first key of pg_try_advisory_lock(int, int), per kind; the scheduler uses the one-bigint form
    _NAMESPACES: ClassVar[dict[str, int]] = {"runs": 0x65766C, "firings": 0x657666}

    def __init__(self, engine: Engine, kind: str = "runs") -> None:
        """``kind``: "runs" (run ids) or "firings" (firing ids): each has its own key space."""
        self.engine = engine
        self._NAMESPACE = self._NAMESPACES[kind]
        path = _beside(engine, f".{kind}.lock")
        self._file = str(path) if path is not None else None
        self._store = self._file or f"{kind}:{engine.url.render_as_string(hide_password=False)}"
        self._conn: Connection | None = None
        self._mine: list[int] = []

    def __enter__(self) -> RunLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_all()

    def acquire(self, run_id: int) -> bool:
        """Take run ``run_id``'s lock without waiting; False when another process or thread is executing it."""
        key = (self._store, run_id)
        with _guard:
            if key in _held:
                return False
            _held.add(key)
        try:
            got = self._pg_try(run_id) if self.engine.dialect.name == "postgresql" else self._file_try(run_id)
        except BaseException:
            self._forget(run_id)
            raise
        if got:
            self._mine.append(run_id)
        else:
            self._forget(run_id)
        return got

    def release_all(self) -> None:
        """Release every lock this holder took; errors are ignored (a lost connection released them already)."""
        for run_id in self._mine:
            try:
                if self._conn is None:
                    fh = _lock_files.get(self._store)
                    if fh is not None:
                        fcntl.lockf(fh, fcntl.LOCK_UN, 1, run_id)
                else:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), {"ns": self._NAMESPACE, "id": run_id})
                    self._conn.commit()
            except Exception:  # the store went away, and the lock with it
                pass
            self._forget(run_id)
        self._mine = []
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _forget(self, run_id: int) -> None:
        with _guard:
            _held.discard((self._store, run_id))

    def _pg_try(self, run_id: int) -> bool:
        if self._conn is None:
            self._conn = self.engine.connect()
        got = self._conn.execute(text("SELECT pg_try_advisory_lock(:ns, :id)"), {"ns": self._NAMESPACE, "id": run_id})
        value = bool(got.scalar())
        self._conn.commit()  # the lock is the session's; do not sit idle in a transaction for the whole run
        return value

    def _file_try(self, run_id: int) -> bool:
        if self._file is None:
            return True  # a private in-memory store: only this process's threads can see it
        with _guard:
            fh = _lock_files.get(self._file)
            if fh is None:
                fh = _lock_files[self._file] = open(self._file, "a")  # kept open: see _lock_files
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, run_id)
        except OSError:  # EAGAIN / EACCES: another process holds it
            return False
        return True

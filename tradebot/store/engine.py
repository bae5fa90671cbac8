"""
The database engine and its transactions: an engine per URL (SQLite files in WAL mode,
created readable by their owner alone; PostgreSQL with a lock timeout), and
`run_in_transaction`, which runs one ``thd_*`` function in a transaction and
retries it while the database is locked or away.
"""

import os
import time

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from twisted.logger import Logger

from tradebot.store.faults import UNREACHABLE, DatabaseFault, classify

_log = Logger()


class StoreError(Exception):
    """A store operation was refused; the message says why."""


#: How long a write waits for a database that is locked or went away (a
#: restart, a failover) before it gives up: the default retry window.
RECONNECT_WINDOW = 60.0


#: How long one statement waits for a lock before its transaction is retried
#: (SQLite's busy timeout, PostgreSQL's lock_timeout), at most.
LOCK_WAIT = 5.0


def make_engine(url: str, lock_wait: float = LOCK_WAIT) -> sa.engine.Engine:
    """An engine for `url`. SQLite files get WAL, foreign keys and a busy
    timeout of `lock_wait` seconds; a PostgreSQL session waits as long for a
    lock (lock_timeout). Connections are pooled (the server uses one thread for
    SQLite)."""
    wait_ms = max(1, int(lock_wait * 1000))
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = sa.create_engine(
            url, connect_args={"timeout": lock_wait, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={wait_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _pg_settings(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET lock_timeout = {wait_ms}")
            cursor.close()
            dbapi_connection.commit()  # a SET rolled back would be undone

    return engine


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file of `url` readable by its owner alone (0600:
    it holds token hashes, trades and encrypted passwords), whatever the
    umask; SQLite gives its -wal and -shm files the same mode. A file that
    exists already is left as it is, with a warning if others may read it."""
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            _log.warn(
                "the database file {path} may be read by others (mode {mode:o}): chmod 600 it",
                path=path,
                mode=mode & 0o777,
            )
        return
    except OSError:
        return  # no such folder, no permission: SQLite's own error says so
    os.close(descriptor)


class CommitOutcomeUnknown(StoreError):
    """The connection was lost while a transaction committed: it may or may
    not have been applied, so it is not run again."""


def run_in_transaction(engine, fn, *args, _on_retry=None, _retry_window=RECONNECT_WINDOW, **kwargs):
    """Run ``fn(conn, *args, **kwargs)`` in one transaction and return its
    result. A transaction that fails before its commit on a transient fault
    (the database locked, or a database server's connection lost: it rolled
    the transaction back) runs again with back-off for up to `_retry_window`
    seconds; then, or at once on a persistent fault (disk full, read-only, I/O
    error), `DatabaseFault` is raised. A connection lost during the commit
    raises `CommitOutcomeUnknown`. `_on_retry` (if given) is called before
    each retry."""
    deadline = time.monotonic() + _retry_window
    delay = 0.05
    warned = False
    while True:
        try:
            with engine.connect() as conn:
                transaction = conn.begin()
                result = fn(conn, *args, **kwargs)
                try:
                    transaction.commit()
                except DBAPIError as e:
                    fault = classify(engine.dialect.name, e)
                    if engine.dialect.name != "sqlite" and fault is not None and fault.kind == UNREACHABLE:
                        raise CommitOutcomeUnknown(f"the database connection was lost while committing: {e.orig}")
                    raise
                return result
        except DBAPIError as e:
            fault = classify(engine.dialect.name, e)
            if fault is None:
                raise
            if not fault.transient or time.monotonic() + delay > deadline:
                raise DatabaseFault(fault.kind, _first_line(e)) from e
            if not warned:
                _log.warn("database {kind} ({error}); retrying", kind=fault.kind, error=_first_line(e))
                warned = True
            if _on_retry is not None:
                _on_retry()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__

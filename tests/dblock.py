"""
A write lock on a test database, held by a connection of its own, as another
program would hold it: SQLite's ``BEGIN EXCLUSIVE``, or on PostgreSQL ``LOCK
TABLE ... IN EXCLUSIVE MODE`` on every table. Reads go on; writes wait.

- `DatabaseLock`: the lock held by a connection in this process.
- `LockProcess`: the lock held by another process (this module run as a
  script), driven from the reactor: ``await lock()``, ``await unlock()``.
"""

import os
import sqlite3
import sys

from sqlalchemy.engine import make_url
from twisted.internet import defer, protocol, reactor

#: Seconds PostgreSQL lets the lock be held before it ends the session.
MAX_HOLD = 45

#: Every table the server writes.
TABLES = ("accounts", "trades", "events", "broker_state", "alembic_version")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DatabaseLock:
    """A connection to the database at `url` that can hold a write lock."""

    def __init__(self, url: str):
        u = make_url(url)
        self._sqlite = u.get_backend_name() == "sqlite"
        if self._sqlite:
            self._conn = sqlite3.connect(u.database, isolation_level=None, timeout=30, check_same_thread=False)
        else:
            import psycopg

            self._conn = psycopg.connect(
                host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username,
                password=u.password, dbname=u.database,
            )
            # a writer that waits for ever fails its test rather than hanging it:
            # the server ends this session once it holds its lock this long
            self._conn.execute(f"SET idle_in_transaction_session_timeout = '{MAX_HOLD}s'")
            self._conn.commit()

    def lock(self) -> None:
        """Take the write lock (waiting for a write under way to end)."""
        if self._sqlite:
            self._conn.execute("BEGIN EXCLUSIVE")
        else:
            self._conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")

    def unlock(self) -> None:
        """Let the lock go, having written nothing."""
        if self._sqlite:
            self._conn.execute("ROLLBACK")
        else:
            self._conn.rollback()

    def close(self) -> None:
        self._conn.close()


class LockProcess(protocol.ProcessProtocol):
    """The lock held by another process; each call fires once that process
    has done it (or fails after `timeout` seconds)."""

    def __init__(self, timeout: float = 30):
        self._timeout = timeout
        self._buffer = b""
        self._waiting = []
        self.ended = defer.Deferred()
        self.errors = b""

    @classmethod
    def start(cls, url: str) -> "LockProcess":
        holder = cls()
        reactor.spawnProcess(
            holder, sys.executable, [sys.executable, "-m", "tests.dblock", url], env=os.environ, path=_ROOT
        )
        return holder

    def _ask(self, command: str, answer: bytes):
        d = defer.Deferred()
        self._waiting.append((answer, d))
        self.transport.write(command.encode() + b"\n")
        return d.addTimeout(self._timeout, reactor)

    def lock(self):
        """Deferred: the other process holds the lock."""
        return self._ask("lock", b"locked")

    def unlock(self):
        """Deferred: the other process has let it go."""
        return self._ask("unlock", b"unlocked")

    def stop(self):
        """Deferred: the other process ended (letting any lock go)."""
        self.transport.closeStdin()
        return self.ended

    def outReceived(self, data):
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            answer, d = self._waiting.pop(0)
            assert line.strip() == answer, line
            d.callback(None)

    def errReceived(self, data):
        self.errors += data

    def processEnded(self, reason):
        for _, d in self._waiting:
            d.errback(RuntimeError(f"the lock process ended: {self.errors.decode(errors='replace')}"))
        self._waiting = []
        self.ended.callback(reason.value.exitCode)


def main(url: str) -> None:
    """Hold the lock on command: ``lock`` / ``unlock`` lines on stdin, each
    answered on stdout once done; end at end of input."""
    held = DatabaseLock(url)
    for line in sys.stdin:
        command = line.strip()
        if command == "lock":
            held.lock()
            print("locked", flush=True)
        elif command == "unlock":
            held.unlock()
            print("unlocked", flush=True)
    held.close()


if __name__ == "__main__":
    main(sys.argv[1])

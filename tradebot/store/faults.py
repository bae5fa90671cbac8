"""
Database faults: the errors that mean the database cannot take an operation
now, and the watch over whether it takes writes.

`classify` sorts an error into a `Fault`. Transient ones (SQLite's file locked
by another process, a PostgreSQL lock wait that timed out, a database server
that went away) are worth running again within the store's retry window;
persistent ones (disk full, read-only, I/O error) are not. When the store gives
up it raises `DatabaseFault`, and its `WriteHealth` tells its watchers (the
sessions) once that writes fail, and once that they work again.
"""

from typing import Callable, List, Optional

import attrs
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

LOCKED = "locked"
UNREACHABLE = "unreachable"
DISK_FULL = "disk full"
READ_ONLY = "read-only"
IO_ERROR = "I/O error"
CANNOT_OPEN = "cannot open"

#: Seconds between checks that writes work again, while they fail (at most).
CHECK_INTERVAL = 5.0


@attrs.frozen
class Fault:
    """What kind of fault an error is, and whether running the transaction
    again soon may succeed."""

    kind: str
    transient: bool


#: SQLite's primary result codes (``sqlite_errorname`` without its extension).
_SQLITE_CODES = {
    "SQLITE_BUSY": Fault(LOCKED, True),
    "SQLITE_LOCKED": Fault(LOCKED, True),
    "SQLITE_FULL": Fault(DISK_FULL, False),
    "SQLITE_READONLY": Fault(READ_ONLY, False),
    "SQLITE_IOERR": Fault(IO_ERROR, False),
    "SQLITE_CANTOPEN": Fault(CANNOT_OPEN, False),
}
#: The same by message, for a driver that gives no code.
_SQLITE_TEXTS = {
    "database is locked": "SQLITE_BUSY",
    "database is busy": "SQLITE_BUSY",
    "database table is locked": "SQLITE_LOCKED",
    "database or disk is full": "SQLITE_FULL",
    "readonly database": "SQLITE_READONLY",
    "disk I/O error": "SQLITE_IOERR",
    "unable to open database file": "SQLITE_CANTOPEN",
}
#: PostgreSQL SQLSTATEs that are not about the connection.
_PG_STATES = {
    "53100": Fault(DISK_FULL, False),  # disk_full
    "25006": Fault(READ_ONLY, False),  # read_only_sql_transaction
    "58030": Fault(IO_ERROR, False),  # io_error
    "55P03": Fault(LOCKED, True),  # lock_not_available: lock_timeout ran out
    "40P01": Fault(LOCKED, True),  # deadlock_detected
    "40001": Fault(LOCKED, True),  # serialization_failure
}


def classify(dialect: str, error: Exception) -> Optional[Fault]:
    """The fault `error` (raised by SQLAlchemy on a `dialect` database) is, or
    None for an error of the program or its data (a constraint, a bad query)."""
    if not isinstance(error, DBAPIError):
        return None
    orig = error.orig
    if dialect == "sqlite":
        name = getattr(orig, "sqlite_errorname", None)
        if name is None:
            text = str(orig)
            name = next((code for part, code in _SQLITE_TEXTS.items() if part in text), "")
        return _SQLITE_CODES.get("_".join(name.split("_")[:2]))  # SQLITE_IOERR_WRITE: SQLITE_IOERR
    fault = _PG_STATES.get(getattr(orig, "sqlstate", None) or "")
    if fault is not None:
        return fault
    if isinstance(error, (OperationalError, InterfaceError)) or error.connection_invalidated:
        return Fault(UNREACHABLE, True)
    return None


class DatabaseFault(Exception):
    """The database did not take an operation, for a reason outside the
    program: `kind` (one of this module's constants) and the driver's own
    words (`detail`). A transient fault was retried before it was raised."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"database {kind}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def reason(self) -> str:
        """The fault in a few words, for a client: ``database: disk full``."""
        return f"database: {self.kind}"


class WriteHealth:
    """Whether the database takes writes. Any operation that fails with a
    `DatabaseFault` says it does not; only a successful `check` (a write that
    always writes) says it does again. While writes fail, `check` runs every
    `interval` seconds on `clock` (if one is given). Watchers are called with
    ``(writable, reason)`` once at each change."""

    _log = Logger()

    def __init__(self, check: Callable[[], defer.Deferred], clock=None, interval: float = CHECK_INTERVAL):
        self.fault: Optional[DatabaseFault] = None
        self._check = check
        self._clock = clock
        self._interval = interval
        self._loop: Optional[LoopingCall] = None
        self._watchers: List[Callable[[bool, str], None]] = []

    @property
    def writable(self) -> bool:
        """False from a fault until a check write succeeds."""
        return self.fault is None

    def watch(self, watcher: Callable[[bool, str], None]) -> None:
        """Call ``watcher(writable, reason)`` at each change."""
        self._watchers.append(watcher)

    def unwatch(self, watcher) -> None:
        """Stop calling `watcher`."""
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def failed(self, fault: DatabaseFault) -> None:
        """An operation failed with `fault`."""
        was_writable = self.fault is None
        self.fault = fault
        if was_writable:
            self._log.error(
                "the database takes no writes ({fault}); trading is paused until a write works again",
                fault=fault,
            )
            self._start_checks()
            self._tell(False, fault.reason)

    def checked(self) -> None:
        """A check write succeeded."""
        if self.fault is None:
            return
        self._log.info("the database takes writes again; trading resumes")
        self.fault = None
        self.stop()
        self._tell(True, "")

    def stop(self) -> None:
        """Stop checking (at shutdown, or once writes work)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tell(self, writable: bool, reason: str) -> None:
        for watcher in list(self._watchers):
            try:
                watcher(writable, reason)
            except Exception:
                self._log.failure("a watcher of the database failed")

    def _start_checks(self) -> None:
        if self._clock is None or self._loop is not None:
            return
        self._loop = LoopingCall(self._run_check)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False).addErrback(
            lambda f: self._log.failure("database write checks ended", f)
        )

    def _run_check(self):
        d = defer.maybeDeferred(self._check)

        def _failed(failure):
            # a DatabaseFault has been recorded by the store already
            if not failure.check(DatabaseFault):
                self._log.failure("checking that the database takes writes failed", failure)

        return d.addErrback(_failed)

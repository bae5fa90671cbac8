"""
Fixtures shared by the tests.

- `db_url`: a fresh SQLite database file.
- `inline_store`: the real store on that file, running each operation inline on
  the calling thread, so tests driven by a `Clock` stay deterministic.
- `logged_errors` (autouse): fails a test that logged an error it did not
  expect; a test that expects one takes it with ``logged_errors.take(Type)``.
"""

import pytest
from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher

from tradebot.store import SyncStore


class InlineStore(SyncStore):
    """The store, each operation run at once in the caller's thread and its
    result returned as a fired Deferred (the shape `Store` returns)."""

    def run(self, fn, *args, **kwargs):
        return defer.execute(super().run, fn, *args, **kwargs)


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path}/tradebot.sqlite"


@pytest.fixture
def inline_store(db_url):
    store = InlineStore(db_url)
    store.create_schema()
    yield store
    store.close()


class LoggedErrors:
    """Errors logged during a test."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        if event.get("log_failure") is not None or event.get("log_level") in (
            LogLevel.error,
            LogLevel.critical,
        ):
            self.events.append(event)

    def take(self, error_type) -> int:
        """Remove the logged failures of `error_type`; how many there were."""
        taken = [
            e for e in self.events if e.get("log_failure") is not None and e["log_failure"].check(error_type)
        ]
        self.events = [e for e in self.events if e not in taken]
        return len(taken)

    def take_errors(self, text: str) -> int:
        """Remove the logged errors (without a failure) whose text holds
        `text`; how many there were."""
        from twisted.logger import formatEvent

        taken = [e for e in self.events if e.get("log_failure") is None and text in formatEvent(e)]
        self.events = [e for e in self.events if e not in taken]
        return len(taken)


@pytest.fixture(autouse=True)
def logged_errors():
    errors = LoggedErrors()
    globalLogPublisher.addObserver(errors)
    yield errors
    globalLogPublisher.removeObserver(errors)
    if errors.events:
        from twisted.logger import formatEvent

        details = "\n".join(
            formatEvent(e) + ("\n" + e["log_failure"].getTraceback() if e.get("log_failure") else "")
            for e in errors.events
        )
        pytest.fail(f"unexpected errors were logged:\n{details}")

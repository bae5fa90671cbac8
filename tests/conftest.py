"""
Fixtures shared by the tests.

- `db_url`: a fresh, empty database, once on SQLite and once on PostgreSQL
  (test ids ``[sqlite]`` and ``[postgresql]``); see `db_url` for the server.
- `db_backend`: which of the two a test got (``"sqlite"`` or ``"postgresql"``).
- `inline_store`: the real store on that database, running each operation
  inline on the calling thread, so tests driven by a `Clock` stay deterministic.
- `logged_errors` (autouse): fails a test that logged an error it did not
  expect; a test that expects one takes it with ``logged_errors.take(Type)``.

Processes the tests start (``twistd tradebot``, ``python -m tradebot``, the
MT5 broker worker) run the checkout's code, whether the package is installed
plainly, editable, or not at all: the checkout is put first on their
``PYTHONPATH`` here, and Twisted finds the plugin in its ``twisted/plugins``.
Only ``tests/test_package.py`` runs the installed package, on purpose.

A test that is about one backend's specifics only opts out of the others with
the ``backends`` marker: ``@pytest.mark.backends("sqlite")`` runs it on SQLite
alone (it gets no ``[postgresql]`` variant at all, rather than a skipped one).
"""

import os

import pytest
from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher

from tradebot.store.db import SyncStore

from . import pg

#: The checkout, first on the path of every process the tests start.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT]
)

#: Every backend `db_url` offers, in test-id order.
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backends(*names): run the test's database fixtures on these backends only "
        f"(of {', '.join(BACKENDS)}); by default on all of them",
    )


def pytest_generate_tests(metafunc):
    """Every test that uses `db_url` (directly or through another fixture)
    runs once per backend, or per backend its ``backends`` marker names."""
    if "db_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    backends = marker.args if marker else BACKENDS
    unknown = set(backends) - set(BACKENDS)
    if unknown or not backends:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown backends {sorted(unknown)}")
    metafunc.parametrize("db_backend", backends)


@pytest.fixture
def db_backend(request):
    """The backend this test's database is on: ``"sqlite"`` or
    ``"postgresql"`` (set by `pytest_generate_tests`)."""
    return request.param


@pytest.fixture
def db_url(db_backend, tmp_path):
    """The SQLAlchemy URL of a fresh, empty database of its own, removed after
    the test.

    - sqlite: a file in the test's temporary directory (not created yet).
    - postgresql: a database created for this test alone on the server at
      ``TRADEBOT_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
      dropped afterwards, connections still open on it included. When that server
      cannot be reached the test is skipped, saying why, except under CI (the
      ``CI`` environment variable set to anything), where it fails instead.
    """
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path}/tradebot.sqlite"
        return
    problem = pg.unreachable()
    if problem is not None:
        message = f"no PostgreSQL at {pg.server_name()}: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so PostgreSQL is required)", pytrace=False)
        pytest.skip(message)
    url = pg.create_database()
    try:
        yield url
    finally:
        pg.drop_database(url)


class InlineStore(SyncStore):
    """The store, each operation run at once in the caller's thread and its
    result returned as a fired Deferred (the shape `Store` returns)."""

    def run(self, fn, *args, **kwargs):
        return defer.execute(super().run, fn, *args, **kwargs)


@pytest.fixture
def inline_store(db_url):
    """An `InlineStore` on `db_url`, brought to the current schema, closed
    after the test."""
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
    """The errors the test logs (a `LoggedErrors`); the test fails if any is
    left untaken at its end."""
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

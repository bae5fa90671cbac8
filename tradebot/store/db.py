"""
Persistence: accounts, trades, undelivered events and broker state.

The operations live by what they touch: `tradebot.store.accounts`,
`tradebot.store.trades` (and events), `tradebot.store.brokerstate`; the
engine and its transactions in `tradebot.store.engine`; this module holds the
two front ends that run them, and keeps them all importable from here.

Every operation is a ``thd_*`` function that takes a SQLAlchemy connection inside
a transaction and returns plain attrs records (never a live row). `Store` runs
them on a dedicated, bounded thread pool and returns Deferreds, so the reactor
thread never touches the database; `SyncStore` runs the same functions in the
caller's thread, for the admin command. SQLite runs in WAL mode with a busy
timeout so the server and the admin command can share one file, which is
created readable by its owner alone.

A transaction that fails because the database is locked or unreachable runs
again for up to the store's retry window; then, or at once for a full disk, a
read-only database or an I/O error, it raises `DatabaseFault`, and the store's
`health` says writes fail until a check write works (`tradebot.store.faults`).
"""

import time
from typing import Optional

import sqlalchemy as sa
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from tradebot.store import migrations
from tradebot.store.accounts import (  # noqa: F401 (importable from here too)
    thd_account_by_id,
    thd_account_by_name,
    thd_account_by_token_hash,
    thd_accounts_to_resume,
    thd_accounts_with_own_broker,
    thd_add_account,
    thd_list_accounts,
    thd_reencrypt_broker_passwords,
    thd_set_token_hash,
    thd_token_hashes,
    thd_update_account,
)
from tradebot.store.brokerstate import thd_check_writes, thd_load_broker_state, thd_save_broker_state  # noqa: F401 (importable from here too)
from tradebot.store.engine import (  # noqa: F401 (importable from here too)
    LOCK_WAIT,
    RECONNECT_WINDOW,
    CommitOutcomeUnknown,
    StoreError,
    make_engine,
    run_in_transaction,
)
from tradebot.store.faults import CHECK_INTERVAL, DatabaseFault, WriteHealth
from tradebot.store.rows import DuplicateAccount, UnknownAccount  # noqa: F401 (importable from here too)
from tradebot.store.trades import (  # noqa: F401 (importable from here too)
    thd_adopt_position,
    thd_complete_trade,
    thd_live_trades,
    thd_mark_delivered,
    thd_mark_not_placed,
    thd_mark_open,
    thd_pending_events,
    thd_record_intent,
    thd_trades,
    thd_trades_page,
)

DEFAULT_DB_URL = "sqlite:///tradebot.sqlite"

_log = Logger()


# -- the two front ends --------------------------------------------------------


class _Operations:
    """The store's operations, each running one ``thd_*`` function through
    ``self.run``: returning a Deferred in `Store`, a value in `SyncStore`.
    `health` says whether the database takes writes."""

    health: WriteHealth

    def run(self, fn, *args, **kwargs):
        raise NotImplementedError

    def check_writes(self):
        """Make a check write; `health` says writes work again if it does."""
        result = self.run(thd_check_writes, time.time())
        if isinstance(result, defer.Deferred):
            return result.addCallback(lambda _: self.health.checked())
        self.health.checked()

    def run_blocking(self, fn, *args):
        """Run ``fn(*args)`` where this store runs its work (not in a
        transaction of its own)."""
        raise NotImplementedError

    @property
    def shown_url(self) -> str:
        """The database URL without its password, for messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def create_schema(self):
        """Bring the database to the code's schema by its migrations (a new
        database is created); the revision it was at."""
        return self.run_blocking(migrations.upgrade, self.engine)

    def prepare(self):
        """Create a new database, accept a current one, refuse an older one
        (`migrations.SchemaError`, naming ``tradebot db upgrade``)."""
        return self.run_blocking(migrations.check_current, self.engine, self.shown_url)

    def revision(self):
        """The database's schema revision (None: empty)."""

        def _revision(engine):
            with engine.connect() as connection:
                return migrations.revision_of(connection)

        return self.run_blocking(_revision, self.engine)

    def add_account(
        self, name, symbols, balance, plan, max_open_trades, always_on, token_hash, broker=None,
        broker_password_encrypted=None,
    ):
        return self.run(
            thd_add_account,
            name,
            tuple(symbols),
            balance,
            plan,
            max_open_trades,
            always_on,
            token_hash,
            time.time(),
            broker,
            broker_password_encrypted,
        )

    def account_by_token_hash(self, token_hash):
        return self.run(thd_account_by_token_hash, token_hash)

    def account_by_name(self, name):
        return self.run(thd_account_by_name, name)

    def account_by_id(self, account_id):
        return self.run(thd_account_by_id, account_id)

    def list_accounts(self):
        return self.run(thd_list_accounts)

    def set_token_hash(self, name, token_hash):
        return self.run(thd_set_token_hash, name, token_hash)

    def update_account(self, name, changes):
        return self.run(thd_update_account, name, changes)

    def token_hashes(self, account_ids):
        return self.run(thd_token_hashes, tuple(account_ids))

    def accounts_with_own_broker(self):
        return self.run(thd_accounts_with_own_broker)

    def reencrypt_broker_passwords(self, reencrypt):
        return self.run(thd_reencrypt_broker_passwords, reencrypt)

    def accounts_to_resume(self):
        return self.run(thd_accounts_to_resume)

    def record_intent(self, account_id, symbol, side, lot_size, stop_loss, take_profit, phase, step):
        return self.run(
            thd_record_intent,
            account_id,
            symbol,
            side,
            lot_size,
            stop_loss,
            take_profit,
            phase,
            step,
            time.time(),
        )

    def mark_open(self, trade_id, ticket, open_price, lot_size, stop_loss, take_profit, opened_at):
        return self.run(
            thd_mark_open, trade_id, ticket, open_price, lot_size, stop_loss, take_profit, opened_at
        )

    def adopt_position(self, account_id, position, phase, step):
        return self.run(
            thd_adopt_position,
            account_id,
            position.comment,
            position.symbol,
            position.side,
            position.ticket,
            position.open_price,
            position.volume,
            position.stop_loss,
            position.take_profit,
            position.opened_at,
            phase,
            step,
            time.time(),
        )

    def mark_not_placed(self, trade_id, status, error):
        return self.run(thd_mark_not_placed, trade_id, status, error)

    def complete_trade(self, trade_id, **result):
        return self.run(thd_complete_trade, trade_id, now=time.time(), **result)

    def live_trades(self, account_id):
        return self.run(thd_live_trades, account_id)

    def trades(self, account_name=None, live_only=False):
        return self.run(thd_trades, account_name, live_only)

    def pending_events(self, account_id):
        return self.run(thd_pending_events, account_id)

    def mark_delivered(self, event_ids):
        return self.run(thd_mark_delivered, list(event_ids), time.time())

    def load_broker_state(self, backend):
        return self.run(thd_load_broker_state, backend)

    def save_broker_state(self, backend, documents):
        return self.run(thd_save_broker_state, backend, documents)


class SyncStore(_Operations):
    """The store for a command-line tool: each operation runs in the caller's
    thread and returns its value. A transient fault is retried for up to
    `retry_window` seconds; given a `clock`, writes are checked on it while
    they fail (see `WriteHealth`)."""

    def __init__(self, url: str = DEFAULT_DB_URL, retry_window: float = RECONNECT_WINDOW, clock=None):
        self.url = url
        self.retry_window = retry_window
        self.engine = make_engine(url, lock_wait=min(LOCK_WAIT, retry_window))
        self.health = WriteHealth(self.check_writes, clock, min(CHECK_INTERVAL, retry_window))

    def run(self, fn, *args, **kwargs):
        try:
            return run_in_transaction(self.engine, fn, *args, _retry_window=self.retry_window, **kwargs)
        except DatabaseFault as e:
            self.health.failed(e)
            raise

    def run_blocking(self, fn, *args):
        return fn(*args)

    def close(self):
        """Stop checking writes; release the database."""
        self.health.stop()
        self.engine.dispose()


class Store(_Operations):
    """The store for the server: each operation runs on the store's own thread
    pool (one thread for SQLite, a few for a server database) and returns a
    Deferred firing with its value. A transient fault is retried for up to
    `retry_window` seconds; while writes fail, a check write is made every
    few seconds (`health`). `start` before use, `stop` at shutdown."""

    def __init__(
        self,
        url: str = DEFAULT_DB_URL,
        reactor=None,
        max_threads: Optional[int] = None,
        metrics=None,
        retry_window: float = RECONNECT_WINDOW,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.metrics = metrics
        self.retry_window = retry_window
        self._reactor = reactor
        self.engine = make_engine(url, lock_wait=min(LOCK_WAIT, retry_window))
        self.health = WriteHealth(self.check_writes, reactor, min(CHECK_INTERVAL, retry_window))
        if max_threads is None:
            max_threads = 1 if url.startswith("sqlite") else 4
        self._pool = ThreadPool(minthreads=1, maxthreads=max_threads, name="tradebot-db")

    def start(self):
        """Start the thread pool and check the schema (`prepare`); a Deferred
        that fails with `migrations.SchemaError` on an older database."""
        self._pool.start()
        return self.prepare()

    def run(self, fn, *args, **kwargs):
        errors = None if self.metrics is None else self.metrics.database_errors
        d = deferToThreadPool(
            self._reactor,
            self._pool,
            run_in_transaction,
            self.engine,
            fn,
            *args,
            _on_retry=None if errors is None else errors.labels(kind="retried").inc,
            _retry_window=self.retry_window,
            **kwargs,
        )

        def _failed(failure):
            if errors is not None and not failure.check(StoreError):  # a refusal is an answer
                errors.labels(kind="failed").inc()
            if failure.check(DatabaseFault):
                self.health.failed(failure.value)
            return failure

        return d.addErrback(_failed)

    def run_blocking(self, fn, *args):
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def ping(self):
        """Deferred: fires once the database has answered ``SELECT 1`` (one
        try, no retry: for health checks)."""

        def _ping(engine):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        return deferToThreadPool(self._reactor, self._pool, _ping, self.engine)

    def stop(self):
        """Stop checking writes, let queued work finish, release the
        database, stop the pool."""
        self.health.stop()
        d = deferToThreadPool(self._reactor, self._pool, self.engine.dispose)

        def _stop(_):
            self._pool.stop()

        d.addBoth(_stop)
        return d

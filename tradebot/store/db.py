"""
Persistence: accounts, trades, undelivered events and broker state.

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

import json
import os
import re
import time
from decimal import Decimal
from typing import Iterable, List, Optional, Tuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from tradebot.store import migrations, records
from tradebot.store.faults import CHECK_INTERVAL, UNREACHABLE, DatabaseFault, WriteHealth, classify
from tradebot.store.planstore import thd_save_plan_state
from tradebot.store.records import Account, Completion, PendingEvent, TradeRecord
from tradebot.store.schema import accounts, broker_state, events, trades

DEFAULT_DB_URL = "sqlite:///tradebot.sqlite"

_log = Logger()


class StoreError(Exception):
    """A store operation was refused; the message says why."""


class DuplicateAccount(StoreError):
    """An account with that name exists already."""


class UnknownAccount(StoreError):
    """No account has that name."""


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


# -- rows to records ----------------------------------------------------------


def _account(row) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        symbols=tuple(s for s in row.symbols.split(",") if s),
        plan=row.plan,
        phase=row.phase,
        step=row.step,
        balance=row.balance,
        max_open_trades=row.max_open_trades,
        always_on=bool(row.always_on),
        revoked=row.token_hash is None,
        created_at=row.created_at,
        broker=row.broker,
        broker_password_encrypted=row.broker_password_encrypted,
        token_hash=row.token_hash,
        plan_changed_at=row.plan_changed_at,
    )


def _trade(row) -> TradeRecord:
    return TradeRecord(**{c.name: getattr(row, c.name) for c in trades.columns})


def _one_account(conn, where) -> Optional[Account]:
    row = conn.execute(sa.select(accounts).where(where)).first()
    return _account(row) if row else None


def _trade_by_id(conn, trade_id: int) -> TradeRecord:
    return _trade(conn.execute(sa.select(trades).where(trades.c.id == trade_id)).one())


# -- accounts -----------------------------------------------------------------


def thd_add_account(
    conn, name, symbols, balance, plan, max_open_trades, always_on, token_hash, now, broker=None,
    broker_password_encrypted=None,
) -> Account:
    """Create an account; raises `DuplicateAccount`. `broker_password_encrypted`
    is already encrypted: the store never sees a plain password."""
    if conn.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).first():
        raise DuplicateAccount(f"an account named {name!r} exists already")
    try:
        result = conn.execute(
            accounts.insert().values(
                name=name,
                token_hash=token_hash,
                symbols=",".join(symbols),
                plan=plan,
                phase=1,
                step=1,
                balance=Decimal(balance),
                max_open_trades=max_open_trades,
                always_on=always_on,
                created_at=now,
                broker=broker,
                broker_password_encrypted=broker_password_encrypted,
            )
        )
    except IntegrityError:
        raise DuplicateAccount(f"an account named {name!r} exists already")
    return _one_account(conn, accounts.c.id == result.inserted_primary_key[0])


def thd_account_by_token_hash(conn, token_hash: str) -> Optional[Account]:
    """The account whose live token hashes to `token_hash`, or None."""
    return _one_account(conn, accounts.c.token_hash == token_hash)


def thd_account_by_name(conn, name: str) -> Optional[Account]:
    """The account called `name`, or None."""
    return _one_account(conn, accounts.c.name == name)


def thd_account_by_id(conn, account_id: int) -> Optional[Account]:
    """The account with this id, or None."""
    return _one_account(conn, accounts.c.id == account_id)


def thd_list_accounts(conn) -> List[Account]:
    """Every account, by name."""
    return [_account(r) for r in conn.execute(sa.select(accounts).order_by(accounts.c.name))]


def thd_set_token_hash(conn, name: str, token_hash: Optional[str]) -> Account:
    """Replace an account's token hash (None revokes); raises `UnknownAccount`."""
    result = conn.execute(
        accounts.update().where(accounts.c.name == name).values(token_hash=token_hash)
    )
    if result.rowcount == 0:
        raise UnknownAccount(f"no account named {name!r}")
    return thd_account_by_name(conn, name)


_SETTABLE = {"symbols", "plan", "max_open_trades", "always_on", "broker", "broker_password_encrypted"}


def thd_update_account(conn, name: str, changes: dict) -> Account:
    """Change an account's settings (symbols, plan, max_open_trades,
    always_on, broker, broker_password_encrypted: already encrypted, or None
    to remove it); raises `UnknownAccount`."""
    unknown = set(changes) - _SETTABLE
    if unknown:
        raise StoreError(f"cannot set {', '.join(sorted(unknown))}")
    values = dict(changes)
    if "symbols" in values:
        values["symbols"] = ",".join(values["symbols"])
    if not values:
        account = thd_account_by_name(conn, name)
        if account is None:
            raise UnknownAccount(f"no account named {name!r}")
        return account
    result = conn.execute(accounts.update().where(accounts.c.name == name).values(**values))
    if result.rowcount == 0:
        raise UnknownAccount(f"no account named {name!r}")
    return thd_account_by_name(conn, name)


def thd_token_hashes(conn, account_ids) -> dict:
    """The live token hash of each account in `account_ids` (None once
    revoked; absent for an account that no longer exists)."""
    rows = conn.execute(sa.select(accounts.c.id, accounts.c.token_hash).where(accounts.c.id.in_(list(account_ids))))
    return {row.id: row.token_hash for row in rows}


def thd_reencrypt_broker_passwords(conn, reencrypt) -> List[str]:
    """Replace each stored broker password by ``reencrypt(name, token)``, all
    in one transaction; the names of the accounts, in order. An error raised
    by `reencrypt` changes nothing."""
    query = (
        sa.select(accounts.c.id, accounts.c.name, accounts.c.broker_password_encrypted)
        .where(accounts.c.broker_password_encrypted.is_not(None))
        .order_by(accounts.c.name)
    )
    names = []
    for row in conn.execute(query).all():
        token = reencrypt(row.name, row.broker_password_encrypted)
        conn.execute(accounts.update().where(accounts.c.id == row.id).values(broker_password_encrypted=token))
        names.append(row.name)
    return names


def thd_accounts_with_own_broker(conn) -> List[Account]:
    """Every account naming its own broker URL, by id."""
    rows = conn.execute(sa.select(accounts).where(accounts.c.broker.is_not(None)).order_by(accounts.c.id))
    return [_account(r) for r in rows]


def thd_accounts_to_resume(conn) -> List[Account]:
    """Accounts whose session must run from start-up: those with a live trade,
    and those set to trade while nobody is connected (unless revoked)."""
    live = sa.select(trades.c.account_id).where(trades.c.status.in_(records.LIVE_STATUSES))
    rows = conn.execute(
        sa.select(accounts)
        .where(
            sa.or_(
                accounts.c.id.in_(live),
                sa.and_(accounts.c.always_on.is_(True), accounts.c.token_hash.is_not(None)),
            )
        )
        .order_by(accounts.c.id)
    )
    return [_account(r) for r in rows]


# -- trades -------------------------------------------------------------------


def thd_record_intent(
    conn, account_id, symbol, side, lot_size, stop_loss, take_profit, phase, step, now
) -> TradeRecord:
    """Record that an order is about to be sent. The trade is pending, with
    the comment ``tb-<id>`` the order must carry."""
    result = conn.execute(
        trades.insert().values(
            account_id=account_id,
            symbol=symbol,
            side=side,
            status=records.PENDING,
            lot_size=lot_size,
            stop_loss=stop_loss,
            take_profit=take_profit,
            phase=phase,
            step=step,
            created_at=now,
        )
    )
    trade_id = result.inserted_primary_key[0]
    conn.execute(trades.update().where(trades.c.id == trade_id).values(comment=f"tb-{trade_id}"))
    return _trade_by_id(conn, trade_id)


def thd_mark_open(
    conn, trade_id, ticket, open_price, lot_size, stop_loss, take_profit, opened_at
) -> TradeRecord:
    """Record the fill of a pending trade, with the broker's figures."""
    conn.execute(
        trades.update()
        .where(trades.c.id == trade_id, trades.c.status.in_(records.LIVE_STATUSES))
        .values(
            status=records.OPEN,
            ticket=ticket,
            open_price=open_price,
            lot_size=lot_size,
            stop_loss=stop_loss,
            take_profit=take_profit,
            opened_at=opened_at,
        )
    )
    return _trade_by_id(conn, trade_id)


def thd_adopt_position(
    conn, account_id, comment, symbol, side, ticket, open_price, lot_size, stop_loss, take_profit,
    opened_at, phase, step, now,
) -> Optional[TradeRecord]:
    """Record an open position of the account's that no live trade holds
    (an order whose answer was lost and that was given up on, or a store
    restored from an older copy): the trade its comment ``tb-<id>`` names, if
    that trade is this account's and was recorded as never placed, opens
    again; otherwise a new open trade records it. None if a trade already
    holds the position."""
    held = conn.execute(
        sa.select(trades.c.id).where(
            trades.c.account_id == account_id,
            trades.c.ticket == ticket,
            trades.c.status.in_(records.LIVE_STATUSES + (records.CLOSED,)),
        )
    ).first()
    if held:
        return None
    filled = dict(
        status=records.OPEN, ticket=ticket, open_price=open_price, lot_size=lot_size,
        stop_loss=stop_loss, take_profit=take_profit, opened_at=opened_at,
    )
    named = re.fullmatch(r"tb-(\d+)", comment or "")
    if named:
        result = conn.execute(
            trades.update()
            .where(
                trades.c.id == int(named.group(1)),
                trades.c.account_id == account_id,
                trades.c.status.in_((records.PENDING, records.CANCELLED, records.REFUSED)),
            )
            .values(error=None, **filled)
        )
        if result.rowcount:
            return _trade_by_id(conn, int(named.group(1)))
    inserted = conn.execute(
        trades.insert().values(
            account_id=account_id, symbol=symbol, side=side, comment=(comment or "")[:32],
            phase=phase, step=step, created_at=now, **filled,
        )
    )
    return _trade_by_id(conn, inserted.inserted_primary_key[0])


def thd_mark_not_placed(conn, trade_id, status, error) -> TradeRecord:
    """Record that a pending trade was never placed (refused or cancelled)."""
    assert status in (records.REFUSED, records.CANCELLED)
    conn.execute(
        trades.update()
        .where(trades.c.id == trade_id, trades.c.status == records.PENDING)
        .values(status=status, error=str(error)[:500])
    )
    return _trade_by_id(conn, trade_id)


def thd_complete_trade(
    conn,
    trade_id,
    close_price,
    closed_at,
    profit,
    result,
    close_reason,
    phase_after,
    step_after,
    balance_after,
    payload,
    now,
    plan_state=None,
    plan_events=(),
) -> Completion:
    """Record a trade's result, move its account to the new phase, step and
    balance, and queue the completion message, all in one transaction; with
    `plan_state` (a `tradebot.plans.engine.PlanState`), store it and `plan_events`
    in the same transaction. A trade recorded as closed already is left as it
    is (`already_recorded`), and so is the plan state."""
    trade = _trade_by_id(conn, trade_id)
    if trade.status == records.CLOSED:
        row = conn.execute(
            sa.select(events).where(events.c.trade_id == trade_id).order_by(events.c.id)
        ).first()
        return Completion(
            trade=trade,
            account=thd_account_by_id(conn, trade.account_id),
            event_id=row.id,
            payload=json.loads(row.payload),
            already_recorded=True,
        )
    conn.execute(
        trades.update()
        .where(trades.c.id == trade_id)
        .values(
            status=records.CLOSED,
            close_price=close_price,
            closed_at=closed_at,
            profit=profit,
            result=result,
            close_reason=close_reason,
            phase_after=phase_after,
            step_after=step_after,
            balance_after=balance_after,
        )
    )
    conn.execute(
        accounts.update()
        .where(accounts.c.id == trade.account_id)
        .values(phase=phase_after, step=step_after, balance=balance_after)
    )
    if plan_state is not None:
        thd_save_plan_state(conn, trade.account_id, plan_state, plan_events, now)
    event_id = conn.execute(
        events.insert().values(
            account_id=trade.account_id,
            trade_id=trade_id,
            payload=json.dumps(payload),
            created_at=now,
        )
    ).inserted_primary_key[0]
    return Completion(
        trade=_trade_by_id(conn, trade_id),
        account=thd_account_by_id(conn, trade.account_id),
        event_id=event_id,
        payload=payload,
    )


def thd_live_trades(conn, account_id: int) -> List[TradeRecord]:
    """The account's pending and open trades, oldest first."""
    rows = conn.execute(
        sa.select(trades)
        .where(trades.c.account_id == account_id, trades.c.status.in_(records.LIVE_STATUSES))
        .order_by(trades.c.id)
    )
    return [_trade(r) for r in rows]


def thd_trades(
    conn, account_name: Optional[str] = None, live_only: bool = False
) -> List[Tuple[str, TradeRecord]]:
    """(account name, trade) pairs, oldest first, optionally for one account
    or only live trades; raises `UnknownAccount`."""
    query = sa.select(accounts.c.name, trades).join(accounts, accounts.c.id == trades.c.account_id)
    if account_name is not None:
        if thd_account_by_name(conn, account_name) is None:
            raise UnknownAccount(f"no account named {account_name!r}")
        query = query.where(accounts.c.name == account_name)
    if live_only:
        query = query.where(trades.c.status.in_(records.LIVE_STATUSES))
    return [(r.name, _trade(r)) for r in conn.execute(query.order_by(trades.c.id))]


def thd_trades_page(conn, account_id: int, before: Optional[int], limit: int) -> List[TradeRecord]:
    """The account's last `limit` trades with ids below `before` (all, if
    None), oldest first: read by id from the end, never the whole history."""
    query = sa.select(trades).where(trades.c.account_id == account_id)
    if before is not None:
        query = query.where(trades.c.id < before)
    rows = conn.execute(query.order_by(trades.c.id.desc()).limit(limit)).all()
    return [_trade(r) for r in reversed(rows)]


# -- events -------------------------------------------------------------------


def thd_pending_events(conn, account_id: int) -> List[PendingEvent]:
    """The account's undelivered messages, oldest first."""
    rows = conn.execute(
        sa.select(events)
        .where(events.c.account_id == account_id, events.c.delivered_at.is_(None))
        .order_by(events.c.id)
    )
    return [PendingEvent(r.id, r.account_id, r.trade_id, json.loads(r.payload)) for r in rows]


def thd_mark_delivered(conn, event_ids: Iterable[int], now: float) -> None:
    """Record that these events reached a client."""
    ids = list(event_ids)
    if ids:
        conn.execute(
            events.update()
            .where(events.c.id.in_(ids), events.c.delivered_at.is_(None))
            .values(delivered_at=now)
        )


# -- broker state -------------------------------------------------------------


def thd_load_broker_state(conn, backend: str) -> dict:
    """Every document a broker backend saved, as {key: decoded JSON}."""
    rows = conn.execute(sa.select(broker_state).where(broker_state.c.backend == backend))
    return {r.key: json.loads(r.value) for r in rows}


def thd_save_broker_state(conn, backend: str, documents: dict) -> None:
    """Insert or replace a broker backend's documents, {key: JSON-able}."""
    for key, value in documents.items():
        text = json.dumps(value, sort_keys=True)
        result = conn.execute(
            broker_state.update()
            .where(broker_state.c.backend == backend, broker_state.c.key == key)
            .values(value=text)
        )
        if result.rowcount == 0:
            conn.execute(broker_state.insert().values(backend=backend, key=key, value=text))


#: Where `thd_check_writes` writes: a row of its own in ``broker_state``.
CHECK_BACKEND, CHECK_KEY = "tradebot", "write-check"


def thd_check_writes(conn, now: float) -> None:
    """A write that always changes a row (the time of the check), so that it
    needs the space and the lock any other write needs."""
    thd_save_broker_state(conn, CHECK_BACKEND, {CHECK_KEY: {"checked_at": now}})


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

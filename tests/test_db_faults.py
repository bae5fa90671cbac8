"""
A database that takes no writes (locked by another program, a full disk,
read-only) never loses or double-counts a trade, a balance or a result.

- The store: a lock held past the retry window, a full disk and a read-only
  database each raise `DatabaseFault` of their kind (a lock after retrying for
  the window, the others at once), leave nothing half-written, and writes work
  again once a check write succeeds.
- The session (a `Clock`, the real store inline, a lock held by a connection of
  its own): a fill or a result that cannot be stored stays live and is stored
  at a later tick, sent only then and only once; a completion sent but not yet
  recorded as delivered is never sent again; trading pauses and resumes with
  one message each way.
- End to end (the server on a real port, a real websocket client, the lock held
  by another process, the disk a real tmpfs filled to the last byte): a locked
  intent places no order; a full disk while a trade closes holds its completion
  back until there is room; a lock shorter than the retry window is invisible.

A full disk cannot be made for PostgreSQL here (its files belong to a server
shared with other runs); it is classified by SQLSTATE 53100 like SQLite's
SQLITE_FULL, and a read-only database stands in for a persistent fault there.
"""

import errno
import json
import os
import sqlite3
import subprocess
import time
from decimal import Decimal

import pytest
import pytest_twisted
import sqlalchemy as sa
import treq
from sqlalchemy import event
from sqlalchemy.engine import make_url
from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from tradebot.broker import BUY
from tradebot.store import records
from tradebot.store.db import SyncStore
from tradebot.store.faults import DISK_FULL, LOCKED, READ_ONLY, DatabaseFault
from tradebot.store.tokens import hash_token
from tradebot.trading import messages

from .conftest import InlineStore
from .dblock import DatabaseLock, LockProcess
from .scripted import ScriptedBroker
from .test_e2e import add_account, make_admin_token, start_server
from .test_loops import MONITOR_INTERVAL, SIGNAL_INTERVAL, Recorder, Rig, buy_xauusd
from .wsclient import connect, message_is

#: The retry window of the stores and servers here: a lock held longer is a fault.
RETRY_WINDOW = 0.3
STORE_FAILING = "the database takes no writes"


def intent(store, account_id):
    """Record a pending BUY XAUUSD for the account (what a signal does first)."""
    return store.record_intent(
        account_id, "XAUUSD", BUY, Decimal("0.10"), Decimal("2325"), Decimal("2340"), 1, 1
    )


def new_account(store, name="alice"):
    return store.add_account(name, ["XAUUSD"], Decimal(10000), "default", 1, False, hash_token(name))


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(db_url, clock):
    """The real store, run inline, retrying a locked database for
    `RETRY_WINDOW` seconds and checking writes on `clock` while they fail."""
    store = InlineStore(db_url, retry_window=RETRY_WINDOW, clock=clock)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def db_lock(db_url, store):
    """A connection of its own that can lock the database against writes."""
    lock = DatabaseLock(db_url)
    yield lock
    lock.close()


class SmallDisk:
    """A small tmpfs mounted at `path`, to fill to the last byte and empty."""

    def __init__(self, path):
        self.path = path
        self._filler = os.path.join(path, "filler")

    def fill(self, database: str) -> None:
        """Leave no free byte. The database's write-ahead log is emptied into
        the database first, so the next write must grow it (as a log that has
        reached its end would)."""
        with sqlite3.connect(database, timeout=10) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        conn.close()
        assert busy == 0, "the write-ahead log could not be emptied"
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            for size in (1 << 20, 4096, 1):
                block = b"\0" * size
                try:
                    while True:
                        os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def make_room(self) -> None:
        os.remove(self._filler)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs to fill; skipped where it cannot be mounted (not root)."""
    path = tmp_path / "disk"
    path.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tradebot-test", str(path)],
            capture_output=True, text=True, timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("a full disk needs a small filesystem to fill: no mount command here")
    if mounted.returncode != 0:
        pytest.skip(
            "a full disk needs a small filesystem to fill, and mounting a tmpfs is not permitted here "
            f"(it needs root): {mounted.stderr.strip()}"
        )
    try:
        yield SmallDisk(str(path))
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- the store -------------------------------------------------------------------


def test_a_lock_held_past_the_retry_window_is_a_locked_fault(store, db_lock, logged_errors):
    account = new_account(store).result
    db_lock.lock()
    started = time.monotonic()
    failures = []
    intent(store, account.id).addErrback(failures.append)
    waited = time.monotonic() - started
    [failure] = failures
    assert failure.check(DatabaseFault) and failure.value.kind == LOCKED
    assert waited >= RETRY_WINDOW  # it waited for the lock that long first
    assert not store.health.writable
    assert store.trades().result == []  # reads go on under the lock
    db_lock.unlock()
    store.check_writes()
    assert store.health.writable
    intent(store, account.id).result
    assert len(store.trades().result) == 1
    assert logged_errors.take_errors(STORE_FAILING) == 1


@pytest.mark.backends("sqlite")
def test_a_full_database_is_a_disk_full_fault_at_once(db_url, logged_errors):
    # SQLite's own limit on the file's pages: the genuine SQLITE_FULL, where no
    # small filesystem can be mounted to fill
    store = SyncStore(db_url, retry_window=30)
    store.create_schema()
    account = new_account(store)
    limit = {"pages": None}

    @event.listens_for(store.engine, "checkout")
    def _limit(dbapi_connection, _record, _proxy):
        dbapi_connection.execute(f"PRAGMA max_page_count={limit['pages'] or 1073741823}")

    with store.engine.connect() as conn:
        limit["pages"] = conn.exec_driver_sql("PRAGMA page_count").scalar()
    recorded = 0
    started = time.monotonic()
    with pytest.raises(DatabaseFault) as failed:
        for _ in range(10000):
            intent(store, account.id)
            recorded += 1
    assert failed.value.kind == DISK_FULL
    assert time.monotonic() - started < 10  # not retried for the 30 s window
    assert len(store.trades()) == recorded  # the failed one left nothing
    assert not store.health.writable
    limit["pages"] = None
    store.check_writes()
    assert store.health.writable
    intent(store, account.id)
    assert len(store.trades()) == recorded + 1
    store.close()
    assert logged_errors.take_errors(STORE_FAILING) == 1


def test_a_full_filesystem_is_a_disk_full_fault(small_disk, logged_errors):
    database = os.path.join(small_disk.path, "tradebot.sqlite")
    store = SyncStore(f"sqlite:///{database}", retry_window=30)
    store.create_schema()
    account = new_account(store)
    intent(store, account.id)
    small_disk.fill(database)
    with pytest.raises(DatabaseFault) as failed:
        intent(store, account.id)
    assert failed.value.kind == DISK_FULL
    assert [t.id for _, t in store.trades()] == [1]
    small_disk.make_room()
    store.check_writes()
    assert store.health.writable
    intent(store, account.id)
    assert [t.id for _, t in store.trades()] == [1, 2]
    store.close()
    assert logged_errors.take_errors(STORE_FAILING) == 1


@pytest.mark.backends("postgresql")
def test_a_read_only_postgresql_is_a_persistent_fault(db_url, logged_errors):
    from . import pg

    name = make_url(db_url).database
    store = SyncStore(db_url, retry_window=30)
    store.create_schema()
    account = new_account(store)
    store.engine.dispose()  # new connections take the database's new default
    with pg._admin_engine().connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    started = time.monotonic()
    with pytest.raises(DatabaseFault) as failed:
        intent(store, account.id)
    assert failed.value.kind == READ_ONLY
    assert time.monotonic() - started < 10  # not retried for the 30 s window
    with pg._admin_engine().connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
    store.engine.dispose()
    store.check_writes()
    assert store.health.writable
    intent(store, account.id)
    assert len(store.trades()) == 1
    store.close()
    assert logged_errors.take_errors(STORE_FAILING) == 1


def test_a_result_stored_twice_is_counted_once(store):
    # what the session does when a commit's outcome was lost: store it again
    account = new_account(store).result
    trade = intent(store, account.id).result
    store.mark_open(trade.id, 7, Decimal("2330"), Decimal("0.10"), Decimal("2325"), Decimal("2340"), 1.0).result
    result = dict(
        close_price=Decimal("2340"), closed_at=2.0, profit=Decimal("100"), result="profit", close_reason="tp",
        phase_after=2, step_after=1, balance_after=Decimal("10100"), payload={"message": "Trade completed"},
    )
    first = store.complete_trade(trade.id, **result).result
    again = store.complete_trade(trade.id, **dict(result, balance_after=Decimal("10200"))).result
    assert not first.already_recorded and again.already_recorded
    assert again.event_id == first.event_id and again.payload == first.payload
    assert store.account_by_id(account.id).result.balance == Decimal("10100")
    assert [e.id for e in store.pending_events(account.id).result] == [first.event_id]


# -- the session -------------------------------------------------------------------


def texts(received):
    return [m["message"] for m in received]


def test_a_result_that_cannot_be_stored_stays_live_and_is_sent_once_stored(store, clock, db_lock, logged_errors):
    rig = Rig(store, clock=clock)
    buy_xauusd(rig)
    client = rig.stream()
    assert client.take()[-1] == messages.trade_placed("XAUUSD")

    db_lock.lock()
    rig.broker.set_bid("XAUUSD", "2341.00")  # through the TP: closed at the broker
    clock.advance(MONITOR_INTERVAL)
    assert client.take() == [messages.trading_paused("database: locked")]
    clock.advance(MONITOR_INTERVAL)  # tried again, still locked
    assert client.take() == []
    assert list(rig.session.live_trades) == [1]
    assert [t.status for t in rig.trades()] == [records.OPEN]
    assert store.account_by_name("alice").result.balance == Decimal("10000")

    db_lock.unlock()
    clock.advance(MONITOR_INTERVAL)
    got = client.take()
    assert texts(got).count(messages.TRADE_COMPLETED) == 1
    assert texts(got).count(messages.TRADING_RESUMED) == 1
    [completed] = [m for m in got if m["message"] == messages.TRADE_COMPLETED]
    assert completed["data"]["new_account_balance"] == 10200.0
    assert rig.session.live_trades == {}
    assert store.account_by_name("alice").result.balance == Decimal("10200")  # counted once
    assert store.pending_events(rig.account.id).result == []
    clock.advance(SIGNAL_INTERVAL)  # and the loops go on
    assert messages.checking("EURUSD") in client.take()
    assert logged_errors.take_errors(STORE_FAILING) == 1


class FillingWhileLocked(ScriptedBroker):
    """Fills the first order while another program locks the database."""

    def __init__(self, clock, lock):
        super().__init__(clock)
        self._lock = lock

    def open_position(self, request):
        if not self.orders:
            self._lock.lock()
        return super().open_position(request)


def test_a_fill_that_cannot_be_stored_stays_live_and_is_stored_later(store, clock, db_lock, logged_errors):
    rig = Rig(store, clock=clock, broker=FillingWhileLocked(clock, db_lock))
    buy_xauusd(rig)
    client = rig.stream()
    assert client.take() == [
        messages.checking("EURUSD"),
        messages.checking("XAUUSD"),
        messages.signal(BUY, "XAUUSD"),
        messages.trading_paused("database: locked"),
    ]
    assert [t.status for t in rig.session.live_trades.values()] == [records.PENDING]
    clock.advance(MONITOR_INTERVAL)  # looked up and found, still not storable
    assert client.take() == []
    assert [t.status for t in rig.trades()] == [records.PENDING]

    db_lock.unlock()
    clock.advance(MONITOR_INTERVAL)
    got = client.take()
    assert texts(got).count(messages.TRADE_PLACED) == 1 and messages.TRADING_RESUMED in texts(got)
    assert len(rig.broker.orders) == 1  # never sent again
    [trade] = rig.trades()
    assert (trade.status, trade.ticket) == (records.OPEN, 1001)
    clock.advance(MONITOR_INTERVAL)  # the monitor goes on
    assert texts(client.take()) == [messages.ACTIVE_TRADE]
    assert logged_errors.take_errors(STORE_FAILING) == 1


class LockingOnCompletion(Recorder):
    """A connection on whose receiving a completion another program locks the
    database: the completion is sent, its delivery cannot be recorded."""

    def __init__(self, lock):
        super().__init__()
        self._lock = lock

    def send_frame(self, frame, supersedes=None, written=None):
        if json.loads(frame)["message"] == messages.TRADE_COMPLETED:
            self._lock.lock()
        super().send_frame(frame, supersedes, written)


def test_a_completion_sent_but_not_recorded_as_delivered_is_never_sent_again(store, clock, db_lock, logged_errors):
    rig = Rig(store, clock=clock)
    buy_xauusd(rig)
    first = LockingOnCompletion(db_lock)
    rig.session.attach(first)
    rig.session.start_streaming(first)
    assert first.take()[-1] == messages.trade_placed("XAUUSD")
    rig.broker.set_bid("XAUUSD", "2341.00")
    clock.advance(MONITOR_INTERVAL)
    assert texts(first.take()) == [messages.TRADE_COMPLETED, messages.TRADING_PAUSED]
    assert len(store.pending_events(rig.account.id).result) == 1  # not recorded as delivered

    second = rig.stream()  # a connection that starts streaming now
    assert second.take() == [messages.trading_paused("database: locked")]

    db_lock.unlock()
    clock.advance(RETRY_WINDOW)  # the check write works
    assert first.take() == [messages.trading_resumed()] and second.take() == [messages.trading_resumed()]
    assert store.pending_events(rig.account.id).result == []
    third = rig.stream()
    clock.advance(SIGNAL_INTERVAL)
    assert messages.TRADE_COMPLETED not in texts(second.take()) + texts(third.take())
    assert logged_errors.take_errors(STORE_FAILING) == 1


# -- end to end ----------------------------------------------------------------------


def log_seen(predicate, timeout=60):
    """Deferred that fires the first time a log event whose text satisfies
    `predicate` is emitted (from any thread)."""
    d = defer.Deferred()

    def observer(event):
        if predicate(formatEvent(event)):
            globalLogPublisher.removeObserver(observer)
            reactor.callFromThread(lambda: d.called or d.callback(None))

    globalLogPublisher.addObserver(observer)
    return d.addTimeout(timeout, reactor)


async def health(url, admin_token):
    response = await treq.get(
        "http://" + url.split("//", 1)[1].split("/", 1)[0] + "/health",
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    return response.code, json.loads(await response.text())


def index_of(client, message):
    return next(i for i, m in enumerate(client.received) if m is message)


def is_signal(message):
    return message["message"] in ("BUY", "SELL")


@pytest_twisted.ensureDeferred
async def test_a_locked_database_places_no_order_and_trading_resumes_after(db_url, capsys, logged_errors):
    token = add_account(db_url, capsys, symbols="XAUUSD,EURUSD,GBPUSD")
    admin_token = make_admin_token(db_url)
    service, url = await start_server(db_url, "0.3", "0.1", "--db-retry-window", str(RETRY_WINDOW))
    holder = LockProcess.start(db_url)
    try:
        await holder.lock()
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        paused = await client.wait_for(message_is(messages.TRADING_PAUSED), timeout=60)
        assert paused["data"] == {"reason": "database: locked"}
        refused = await client.wait_for(message_is(messages.TRADE_NOT_PLACED, error="database: locked"))
        signal = [m for m in client.received if is_signal(m)][-1]
        assert signal["data"]["symbol"] == refused["data"]["symbol"]

        store = SyncStore(db_url)  # reads go on under the lock
        account = store.account_by_name("alice")
        assert store.trades("alice") == []  # no intent...
        broker = service.backend.broker_for(str(account.id), None)
        assert broker.positions == {} and len(broker.closed) == 0  # ...so no order
        code, report = await health(url, admin_token)
        assert code == 503 and report["database"] == "writes fail: locked"

        unlocked = time.time()
        await holder.unlock()
        resumed = await client.wait_for(message_is(messages.TRADING_RESUMED), timeout=30)
        between = client.received[index_of(client, paused) + 1:index_of(client, resumed)]
        assert not [m for m in between if m["message"] in (messages.CHECKING, "BUY", "SELL")]
        assert (await health(url, admin_token))[0] == 200
        await client.wait_for(message_is(messages.TRADE_PLACED), since=index_of(client, resumed), timeout=60)
        # every order at the broker carries the comment of an intent recorded before
        # it was sent, once the lock was gone
        orders = [p.comment for p in broker.positions.values()] + [c.comment for c in broker.closed.values()]
        recorded = {t.comment: t for _, t in store.trades("alice")}
        assert orders and all(c in recorded and recorded[c].created_at >= unlocked for c in orders)
        store.close()
        client.sendClose()
        await client.closed
    finally:
        await holder.stop()
        await service.stopService()
    assert logged_errors.take_errors(STORE_FAILING) == 1


@pytest_twisted.ensureDeferred
async def test_a_lock_shorter_than_the_retry_window_is_invisible(db_url, capsys):
    token = add_account(db_url, capsys, symbols="XAUUSD,EURUSD,GBPUSD")
    service, url = await start_server(db_url, "0.3", "0.1", "--db-retry-window", "30")
    holder = LockProcess.start(db_url)
    try:
        await holder.lock()
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        signal = await client.wait_for(is_signal, timeout=60)  # its intent now waits on the lock
        await task.deferLater(reactor, 1.0, lambda: None)  # held that much longer
        unlocked_at = len(client.received)
        await holder.unlock()
        symbol = signal["data"]["symbol"]
        # placed, or refused by the paper broker (a lot it cannot take): either
        # way the order was sent, after its intent was recorded
        outcome = await client.wait_for(
            lambda m: m["message"] in (messages.TRADE_PLACED, messages.TRADE_NOT_PLACED)
            and m["data"]["symbol"] == symbol,
            since=index_of(client, signal),
            timeout=30,
        )
        assert index_of(client, outcome) >= unlocked_at  # the write waited for the lock
        assert messages.TRADING_PAUSED not in texts(client.received)
        assert not [
            m for m in client.received
            if m["message"] == messages.TRADE_NOT_PLACED and m["data"]["error"].startswith("database")
        ]
        client.sendClose()
        await client.closed
    finally:
        await holder.stop()
        await service.stopService()
    store = SyncStore(db_url)
    first, *_ = [t for _, t in store.trades("alice")]
    store.close()
    assert first.symbol == symbol  # the intent that waited was recorded, once
    assert first.status in (records.OPEN, records.CLOSED, records.REFUSED)
    assert (first.status == records.REFUSED) == (outcome["message"] == messages.TRADE_NOT_PLACED)


@pytest_twisted.ensureDeferred
async def test_a_full_disk_holds_a_completion_back_until_there_is_room(small_disk, capsys, logged_errors):
    database = os.path.join(small_disk.path, "tradebot.sqlite")
    db_url = f"sqlite:///{database}"
    token = add_account(db_url, capsys, symbols="XAUUSD,EURUSD")
    admin_token = make_admin_token(db_url)
    service, url = await start_server(db_url, "0.3", "0.1", "--db-retry-window", str(RETRY_WINDOW))
    try:
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        placed = await client.wait_for(message_is(messages.TRADE_PLACED), timeout=60)
        symbol = placed["data"]["symbol"]
        result_unstored = log_seen(lambda text: text.startswith("watching trade") and "disk full" in text)
        small_disk.fill(database)
        paused = await client.wait_for(message_is(messages.TRADING_PAUSED), timeout=60)
        assert paused["data"] == {"reason": "database: disk full"}
        await result_unstored  # the trade closed at the broker; storing its result failed
        assert messages.TRADE_COMPLETED not in texts(client.received)
        store = SyncStore(db_url)
        [trade] = [t for _, t in store.trades("alice") if t.ticket is not None]
        assert (trade.symbol, trade.status) == (symbol, records.OPEN)
        store.close()
        code, report = await health(url, admin_token)
        assert code == 503 and report["database"] == "writes fail: disk full"

        small_disk.make_room()
        done = await client.wait_for(message_is(messages.TRADE_COMPLETED), timeout=30)
        assert done["data"]["trade_id"] == trade.id
        await client.wait_for(message_is(messages.TRADING_RESUMED), timeout=30)
        await client.wait_for(message_is(messages.CHECKING), since=index_of(client, done), timeout=30)
        client.sendClose()
        await client.closed
    finally:
        await service.stopService()
    completions = [m for m in client.received if m["message"] == messages.TRADE_COMPLETED]
    store = SyncStore(db_url)
    trades = [t for _, t in store.trades("alice")]
    account = store.account_by_name("alice")
    undelivered = store.pending_events(account.id)
    store.close()
    assert [m["data"]["trade_id"] for m in completions].count(trade.id) == 1
    [closed] = [t for t in trades if t.id == trade.id]
    assert closed.status == records.CLOSED and float(closed.profit) == done["data"]["profit"]
    assert float(closed.balance_after) == done["data"]["new_account_balance"]
    # counted once: the balance moved by exactly the closed results
    assert account.balance == 10000 + sum(t.profit for t in trades if t.status == records.CLOSED)
    assert undelivered == []
    assert logged_errors.take_errors(STORE_FAILING) == 1

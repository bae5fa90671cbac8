"""
A server killed (SIGKILL, by a fail point: `tradebot.trading.failpoints`) at each step
of a trade's cycle, then started again on the same database: every trade ends
up recorded once with its true result, the account's balance, phase and step
follow from it, no order is ever sent twice, and the client receives each
completion exactly once across both runs.

The server is a real ``twistd tradebot`` process. The MT5 account trades on a
fake terminal served from this test process, so the broker outlives the
server as a real one would, and what it says is the truth the store is
compared with. The paper broker lives inside the server: its truth is the
state it saved, read from the database the moment the server died.
"""

import signal
from decimal import Decimal

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor, task
from twisted.python.usage import UsageError

from tradebot.brokers.paper import STATE_KEY
from tradebot.cli import main as admin
from tradebot.plans.files import load_plan
from tradebot.server.tap import Options, makeService
from tradebot.store import records
from tradebot.store.db import SyncStore
from tradebot.store.schema import events
from tradebot.trading import messages

from .serverproc import Servers
from .test_mt5_links import PATH, Terminal, fake_environment
from .wsclient import connect, message_is

PING = {"msg": "ping"}
MT5_POINTS = ("after_intent", "after_order", "after_close", "after_delivery")


@pytest.fixture
def servers(tmp_path):
    """Starts ``twistd tradebot`` processes; kills those left at the end."""
    servers = Servers(tmp_path)
    yield servers
    pytest_twisted.blockon(defer.ensureDeferred(servers.kill_all()))


@pytest.fixture
def terminal():
    """A fake MT5 terminal served from this process. Its market moves half
    an hour every half second until the test stops `terminal.mover`."""
    terminal = Terminal()
    terminal.mover = task.LoopingCall(terminal.fake.advance, 1800)
    terminal.mover.start(0.5)
    yield terminal
    if terminal.mover.running:
        terminal.mover.stop()
    pytest_twisted.blockon(terminal.stop())


def add_account(db_url, capsys, name, *extra):
    assert admin(["--db", db_url, "account", "add", name, "--symbols", "EURUSD,XAUUSD", *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def mt5_url():
    return f"mt5://?path={PATH}&heartbeat=0.3&call_timeout=30"


def stored(db_url, name):
    """(account, {trade id: trade}, [event rows]) as the database holds them."""
    store = SyncStore(db_url)
    try:
        account = store.account_by_name(name)
        trades = {t.id: t for _, t in store.trades(name)}
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(events).where(events.c.account_id == account.id)).all()
    finally:
        store.close()
    return account, trades, rows


def completions(received, trade_id):
    return [m for m in received if m["message"] == messages.TRADE_COMPLETED and m["data"]["trade_id"] == trade_id]


# -- at the terminal ------------------------------------------------------------


def at_terminal(terminal):
    """The fake terminal, ready for this test's own calls (the server's worker
    shuts its link when it ends)."""
    assert terminal.fake.initialize()
    return terminal.fake


def position_with(terminal, comment):
    [position] = [p for p in at_terminal(terminal).positions_get() if p.comment == comment]
    return position


def close_at_take_profit(terminal, comment):
    """Move the price of the position whose order carried `comment` past its
    take profit: the terminal closes it there."""
    position = position_with(terminal, comment)
    distance = abs(position.tp - position.price_open)
    beyond = position.tp + distance if position.type == 0 else position.tp - distance
    terminal.fake.set_price(position.symbol, beyond)


def orders_sent(terminal):
    """The comments of every order the terminal received from tradebot."""
    orders = at_terminal(terminal).history_orders_get(0, 2**40)
    return sorted(o.comment for o in orders if o.comment.startswith("tb-"))


def truth(terminal, ticket):
    """(profit, close price) of a closed position, from its deals."""
    deals = at_terminal(terminal).history_deals_get(position=ticket)
    profit = round(sum(d.profit + d.commission + d.swap + d.fee for d in deals), 2)
    [exit_deal] = [d for d in deals if d.entry == 1]
    return Decimal(repr(profit)), exit_deal.price


def check_completed(account, trade, done, profit, close_price):
    """The trade, the completion message and the account (as the trade's
    completion left it) agree with the broker's result."""
    assert trade.status == records.CLOSED
    assert trade.profit == profit and float(trade.close_price) == pytest.approx(close_price)
    result = records.PROFIT if profit > 0 else records.LOSS
    assert trade.result == result
    assert (trade.phase_after, trade.step_after) == load_plan(account.plan).next_position(trade.phase, trade.step, result)
    data = done["data"]
    assert (data["result"], data["profit"], data["new_account_balance"]) == (result, float(profit), float(trade.balance_after))
    assert (data["current_phase"], data["current_step"]) == (trade.phase_after, trade.step_after)


def check_account(account, trades):
    """The account stands where its latest completed trade left it."""
    latest = max((t for t in trades.values() if t.status == records.CLOSED), key=lambda t: t.closed_at)
    assert (account.phase, account.step, account.balance) == (latest.phase_after, latest.step_after, latest.balance_after)


# -- the tests --------------------------------------------------------------------


@pytest.mark.parametrize("point", MT5_POINTS)
@pytest_twisted.ensureDeferred
async def test_an_mt5_account_loses_and_repeats_nothing_when_the_server_is_killed(
    point, db_url, capsys, terminal, servers
):
    token = add_account(db_url, capsys, "mia", "--broker-url", mt5_url())
    env = fake_environment(terminal.address)

    first = servers.start(db_url, env=env, failpoints=point)
    await first.listening()
    client = await connect(first.url(token))
    client.send(PING)
    if point in ("after_close", "after_delivery"):
        await client.wait_for(message_is(messages.TRADE_PLACED), timeout=60)
        terminal.mover.stop()
        [trade] = [t for t in stored(db_url, "mia")[1].values() if t.status == records.OPEN]
        close_at_take_profit(terminal, trade.comment)
    assert await first.end() == (None, signal.SIGKILL), first.output()
    if terminal.mover.running:
        terminal.mover.stop()  # from now on, only this test closes positions
    crash = first.failpoint()
    assert crash["point"] == point
    if point == "after_delivery":
        [trade_id] = [r.trade_id for r in stored(db_url, "mia")[2] if r.id == int(crash["event_ids"])]
    else:
        trade_id = int(crash["trade_id"])
    await client.closed
    if point == "after_delivery":
        # killed in the reactor turn that handed the frame over: it never left
        assert completions(client.received, trade_id) == []
    await terminal.server.idle()  # the killed server's worker has let go of the terminal
    before = stored(db_url, "mia")[1][trade_id]
    assert before.status == {
        "after_intent": records.PENDING,
        "after_order": records.PENDING,
        "after_close": records.OPEN,
        "after_delivery": records.CLOSED,
    }[point]
    assert orders_sent(terminal) == ([] if point == "after_intent" else [before.comment])

    second = servers.start(db_url, env=env)
    await second.listening()
    again = await connect(second.url(token))
    again.send(PING)
    if point == "after_intent":
        gave_up = await again.wait_for(message_is(messages.TRADE_NOT_PLACED), timeout=30)
        assert gave_up["data"] == {"symbol": before.symbol, "error": "order never filled"}
    else:
        if point == "after_order":
            # found at the broker by its comment: recorded as placed, late
            await again.wait_for(message_is(messages.TRADE_PLACED, symbol=before.symbol), timeout=30)
            close_at_take_profit(terminal, before.comment)
        done = await again.wait_for(message_is(messages.TRADE_COMPLETED, trade_id=trade_id), timeout=30)
    again.sendClose()
    await again.closed
    second.signal("TERM")
    assert await second.end() in ((None, signal.SIGTERM), (0, None)), second.output()
    assert first.logged_errors() == [] and second.logged_errors() == []

    account, trades, rows = stored(db_url, "mia")
    trade = trades[trade_id]
    fake = at_terminal(terminal)
    # one order per placed trade, never one for the intent that died unsent
    assert orders_sent(terminal) == sorted(t.comment for t in trades.values() if t.ticket is not None)
    if point == "after_intent":
        assert trade.status == records.CANCELLED and trade.ticket is None
        assert account.balance == Decimal(repr(fake.account_info().balance)) == Decimal(10000)
        assert (account.phase, account.step) == (1, 1)
        return
    profit, close_price = truth(terminal, trade.ticket)
    check_completed(account, trade, done, profit, close_price)
    check_account(account, trades)
    assert account.balance == Decimal(repr(fake.account_info().balance)) == Decimal(10000) + profit
    # received exactly once, across both runs, and known to be delivered
    assert len(completions(client.received + again.received, trade_id)) == 1
    assert [r.delivered_at is not None for r in rows if r.trade_id == trade_id] == [True]


def paper_account(db_url, account_id):
    """The paper broker's saved state of an account (its opening state if
    nothing of it was saved)."""
    store = SyncStore(db_url)
    try:
        saved = store.load_broker_state(STATE_KEY)
    finally:
        store.close()
    return saved.get(f"account:{account_id}", {"balance": "10000", "positions": [], "closed": []})


@pytest.mark.parametrize("point", ("after_order", "after_close"))
@pytest_twisted.ensureDeferred
async def test_the_paper_broker_has_saved_whatever_it_told_when_the_server_is_killed(
    point, db_url, capsys, servers
):
    token = add_account(db_url, capsys, "pat")
    first = servers.start(db_url, failpoints=point)
    await first.listening()
    client = await connect(first.url(token))
    client.send(PING)
    assert await first.end() == (None, signal.SIGKILL), first.output()
    crash = first.failpoint()
    trade_id, ticket = int(crash["trade_id"]), int(crash["ticket"])
    await client.closed
    account, trades, _ = stored(db_url, "pat")
    comment = trades[trade_id].comment

    # what the session was told before it died (the fill, or the close) is saved
    saved = paper_account(db_url, account.id)
    told = saved["closed"] if point == "after_close" else saved["positions"] + saved["closed"]
    held = [p for p in told if p["ticket"] == ticket]
    assert [p["comment"] for p in held] == [comment], saved
    assert Decimal(saved["balance"]) == Decimal(10000) + sum(Decimal(c["profit"]) for c in saved["closed"])

    second = servers.start(db_url)
    await second.listening()
    again = await connect(second.url(token))
    again.send(PING)
    done = await again.wait_for(message_is(messages.TRADE_COMPLETED, trade_id=trade_id), timeout=60)
    again.send({"msg": "stop"})
    again.sendClose()
    await again.closed
    second.signal("TERM")
    assert await second.end() in ((None, signal.SIGTERM), (0, None)), second.output()
    assert first.logged_errors() == [] and second.logged_errors() == []

    account, trades, rows = stored(db_url, "pat")
    trade = trades[trade_id]
    saved = paper_account(db_url, account.id)
    [closed] = [c for c in saved["closed"] if c["ticket"] == ticket]
    if point == "after_close":
        assert closed["profit"] == held[0]["profit"]  # the result it told is the one it kept
    assert trade.ticket == ticket and trade.balance_after == Decimal(10000) + Decimal(closed["profit"])
    check_completed(account, trade, done, Decimal(closed["profit"]), float(closed["close_price"]))
    check_account(account, trades)
    # one paper position per order, each held by one trade
    tickets = [p["ticket"] for p in saved["positions"] + saved["closed"]]
    comments = [p["comment"] for p in saved["positions"] + saved["closed"]]
    assert len(set(tickets)) == len(tickets) and len(set(comments)) == len(comments)
    assert sorted(comments) == sorted(t.comment for t in trades.values() if t.ticket is not None)
    assert len(completions(client.received + again.received, trade_id)) == 1
    assert [r.delivered_at is not None for r in rows if r.trade_id == trade_id] == [True]


def test_a_misspelt_fail_point_stops_the_server_before_it_starts(monkeypatch, tmp_path):
    monkeypatch.setenv("TRADEBOT_FAILPOINTS", "after_oder")
    config = Options()
    config.parseOptions(["--db", f"sqlite:///{tmp_path}/tradebot.sqlite"])
    with pytest.raises(UsageError, match="unknown fail point.*after_oder"):
        makeService(config, reactor)

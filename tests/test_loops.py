"""
The session loops, driven by a Clock on a scripted market: the exact message
sequence of each part of the cycle.
"""

import json
from decimal import Decimal

import attrs
from twisted.internet.task import Clock

from tradebot.broker import BUY, SELL, OrderRefused
from tradebot.loops import NOT_FOUND_LOOKS, AccountSession
from tradebot.plans.files import load_plan
from tradebot.signals.strategies import Signal
from tradebot.store import records, schema
from tradebot.store.tokens import hash_token
from tradebot.trading import messages
from tradebot.trading.backends import Backends
from tradebot.trading.manager import SessionManager
from tradebot.trading.market import MarketData

from .scripted import FailingOnce, ScriptedBroker, ScriptedStrategy

SIGNAL_INTERVAL = 60
MONITOR_INTERVAL = 1


class Recorder:
    """A connection that keeps what it is sent."""

    def __init__(self):
        self.received = []

    def send_frame(self, frame, supersedes=None, written=None):
        self.received.append(json.loads(frame))
        if written is not None:
            written()

    def take(self):
        taken, self.received = self.received, []
        return taken


class Rig:
    """One account's session on a scripted market, with its clock."""

    def __init__(self, store, symbols=("EURUSD", "XAUUSD"), always_on=False, plan="default", broker=None, clock=None):
        self.store = store
        self.clock = clock or Clock()
        self.broker = broker or ScriptedBroker(self.clock)
        self.strategy = ScriptedStrategy()
        existing = store.account_by_name("alice").result
        self.account = existing or store.add_account(
            "alice", symbols, Decimal("10000"), plan, 1, always_on, hash_token("t")
        ).result
        self.session = self.new_session()

    def new_session(self):
        session = AccountSession(
            self.account,
            self.store,
            self.broker,
            MarketData(self.clock),
            self.strategy,
            load_plan,
            self.clock,
            SIGNAL_INTERVAL,
            MONITOR_INTERVAL,
        )
        session.startService()
        assert session.ready.called
        return session

    def stream(self, session=None):
        connection = Recorder()
        (session or self.session).attach(connection)
        (session or self.session).start_streaming(connection)
        return connection

    def trades(self):
        return [t for _, t in self.store.trades("alice").result]


def checking(symbol):
    return messages.checking(symbol)


def buy_xauusd(rig):
    rig.strategy.queue("XAUUSD", Signal(BUY, Decimal("5.00"), Decimal("10.00")))


def test_signal_placement_reports_and_take_profit(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    client = rig.stream()

    assert client.take() == [
        checking("EURUSD"),
        checking("XAUUSD"),
        messages.signal(BUY, "XAUUSD"),
        messages.trade_placed("XAUUSD"),
    ]
    # 1% of 10000 at risk over a 5.00 stop on 100 oz a lot: 0.20 lot,
    # entered at the ask 2330.20.
    [order] = rig.broker.orders
    assert (order.side, order.volume, order.stop_loss, order.take_profit) == (
        BUY,
        Decimal("0.20"),
        Decimal("2325.20"),
        Decimal("2340.20"),
    )

    for expected_price in (2330.0, 2331.5, 2329.25):
        rig.broker.set_bid("XAUUSD", str(expected_price))
        rig.clock.advance(MONITOR_INTERVAL)
        [report] = client.take()
        assert report["message"] == "active trade in progress"
        assert report["data"] == {
            "symbol": "XAUUSD",
            "trade_type": "BUY",
            "stop_loss": 2325.2,
            "take_profit": 2340.2,
            "open_price": 2330.2,
            "lot_size": 0.2,
            "curent_price": expected_price,
            "trade_id": 1,
            "profit": round((expected_price - 2330.2) * 100 * 0.2, 2),  # floating, in account money
        }

    rig.broker.set_bid("XAUUSD", "2341.00")  # through the TP: filled at 2340.20
    rig.clock.advance(MONITOR_INTERVAL)
    completed, *after = client.take()
    assert completed["message"] == "Trade completed"
    assert completed["status"] is True
    assert {k: completed["data"][k] for k in messages.trade_completed(0, "", "", 0, 0, 1, 1, 1, 1, 1, 1)["data"]} == {
        "symbol": "XAUUSD",
        "result": "profit",
        "current_phase": 1,  # the default plan's phase 1 needs +10% over 4 trading days
        "current_step": 1,
        "lot_size": 0.2,
        "stop_loss": 2325.2,
        "take_profit": 2340.2,
        "new_account_balance": 10200.0,  # 10.00 x 100 x 0.20
        "trade_id": 1,
        "profit": 200.0,
        "close_price": 2340.2,
    }
    # and the cycle starts over at once
    assert after == [checking("EURUSD"), checking("XAUUSD")]

    [trade] = rig.trades()
    assert (trade.status, trade.result, trade.profit, trade.close_reason) == (
        records.CLOSED,
        "profit",
        Decimal("200"),
        "tp",
    )
    account = inline_store.account_by_name("alice").result
    assert (account.phase, account.step, account.balance) == (1, 1, Decimal("10200"))
    assert inline_store.pending_events(account.id).result == []  # delivered


def test_stop_loss_is_a_loss_and_moves_a_step(inline_store):
    rig = Rig(inline_store)
    rig.strategy.queue("EURUSD", Signal(SELL, Decimal("0.00200"), Decimal("0.00400")))
    client = rig.stream()
    assert client.take()[-1] == messages.trade_placed("EURUSD")
    # SELL at the bid 1.08500: SL 1.08700; 100 at risk over 0.002 x 100000 = 0.50 lot
    [order] = rig.broker.orders
    assert (order.volume, order.stop_loss, order.take_profit) == (
        Decimal("0.50"),
        Decimal("1.08700"),
        Decimal("1.08100"),
    )
    rig.broker.set_bid("EURUSD", "1.08700")  # the ask 1.08710 is through the SL
    rig.clock.advance(MONITOR_INTERVAL)
    completed = client.take()[0]["data"]
    assert (completed["result"], completed["current_phase"], completed["current_step"]) == ("loss", 1, 2)
    assert completed["new_account_balance"] == 9900.0  # 0.002 x 100000 x 0.5 lost
    assert rig.trades()[0].close_reason == "sl"


def test_no_signal_checks_every_interval_and_only_while_streaming(inline_store):
    rig = Rig(inline_store)
    client = rig.stream()
    assert client.take() == [checking("EURUSD"), checking("XAUUSD")]
    rig.clock.advance(SIGNAL_INTERVAL - 1)
    assert client.take() == []
    rig.clock.advance(1)
    assert client.take() == [checking("EURUSD"), checking("XAUUSD")]

    rig.session.stop_streaming(client)
    evaluations = rig.strategy.evaluations
    rig.clock.advance(SIGNAL_INTERVAL * 3)
    assert client.take() == []
    assert rig.strategy.evaluations == evaluations  # nobody streams: no checks

    rig.session.start_streaming(client)  # ping again: checking resumes at once
    assert client.take() == [checking("EURUSD"), checking("XAUUSD")]
    rig.session.start_streaming(client)  # a repeated ping changes nothing
    assert client.take() == []


def test_two_connections_share_one_session_and_one_trade(inline_store):
    rig = Rig(inline_store)
    first = rig.stream()
    second = rig.stream()
    first.take(), second.take()
    buy_xauusd(rig)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert first.take() == second.take() == [
        checking("EURUSD"),
        checking("XAUUSD"),
        messages.signal(BUY, "XAUUSD"),
        messages.trade_placed("XAUUSD"),
    ]
    assert len(rig.broker.orders) == 1
    rig.clock.advance(MONITOR_INTERVAL)
    assert first.take() == second.take()


def test_a_connection_that_starts_streaming_mid_trade_gets_the_trade_at_once(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.stream()
    rig.clock.advance(MONITOR_INTERVAL)
    late = rig.stream()
    [report] = late.take()
    assert report["message"] == "active trade in progress"
    assert report["data"]["symbol"] == "XAUUSD"


def test_last_connection_leaving_keeps_the_trade_watched_and_delivers_later(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    client = rig.stream()
    rig.session.detach(client)
    client.take()

    rig.clock.advance(SIGNAL_INTERVAL * 2)  # no signal checks while nobody streams
    assert rig.strategy.evaluations == 2
    rig.broker.set_bid("XAUUSD", "2320.00")
    rig.clock.advance(MONITOR_INTERVAL)
    [trade] = rig.trades()
    assert trade.status == records.CLOSED and trade.result == "loss"
    [pending] = inline_store.pending_events(rig.account.id).result

    returning = rig.stream()
    received = returning.take()
    assert received[0]["message"] == "Trade completed"
    assert received[0]["data"]["trade_id"] == trade.id
    assert received[0] == pending.payload
    assert [m["message"] for m in received[1:]] == [messages.CHECKING] * 2
    assert inline_store.pending_events(rig.account.id).result == []
    another = rig.stream()
    assert all(m["message"] != "Trade completed" for m in another.take())


class HoldingRecorder(Recorder):
    """A connection whose client is behind: frames are taken but none is
    written before the connection is dropped."""

    def send_frame(self, frame, supersedes=None, written=None):
        self.received.append(json.loads(frame))


def test_a_completion_held_for_a_client_that_is_dropped_reaches_the_next_connection(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    slow = HoldingRecorder()
    rig.session.attach(slow)
    rig.session.start_streaming(slow)
    rig.broker.set_bid("XAUUSD", "2320.00")
    rig.clock.advance(MONITOR_INTERVAL)
    [trade] = rig.trades()
    assert trade.status == records.CLOSED
    assert any(m["message"] == messages.TRADE_COMPLETED for m in slow.received)
    [pending] = inline_store.pending_events(rig.account.id).result  # held back, not delivered
    rig.session.detach(slow)  # closed as too slow, with the completion still waiting

    returning = rig.stream()
    assert returning.take()[0] == pending.payload
    assert inline_store.pending_events(rig.account.id).result == []


def test_a_failing_check_is_logged_and_the_loop_keeps_running(inline_store, logged_errors):
    rig = Rig(inline_store)
    rig.broker.candles = FailingOnce(rig.broker.candles, RuntimeError("feed down"))
    client = rig.stream()
    assert client.take() == [checking("EURUSD"), checking("XAUUSD")]
    assert logged_errors.take(RuntimeError) == 1
    buy_xauusd(rig)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-1] == messages.trade_placed("XAUUSD")


def test_a_broken_loop_body_does_not_stop_the_loop(inline_store, logged_errors):
    rig = Rig(inline_store)
    rig.session._market.signal = FailingOnce(rig.session._market.signal, KeyError("boom"))
    rig.store.account_by_id = FailingOnce(rig.store.account_by_id, OSError("disk"))
    client = rig.stream()
    assert client.take() == []
    assert logged_errors.take(OSError) == 1
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take() == [checking("EURUSD"), checking("XAUUSD")]
    assert logged_errors.take(KeyError) == 1


def test_a_refused_order_is_told_once_and_checking_resumes(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.broker.refuse_next = OrderRefused("not enough money", 10019)
    client = rig.stream()
    assert client.take() == [
        checking("EURUSD"),
        checking("XAUUSD"),
        messages.signal(BUY, "XAUUSD"),
        messages.trade_not_placed("XAUUSD", "not enough money"),
    ]
    [trade] = rig.trades()
    assert trade.status == records.REFUSED and trade.error == "not enough money"
    assert rig.session.live_trades == {}
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take() == [checking("EURUSD"), checking("XAUUSD")]


def test_an_unknown_order_outcome_is_looked_up_not_resent(inline_store, logged_errors):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.broker.lose_next_answer = True
    client = rig.stream()
    assert client.take()[-1] == messages.signal(BUY, "XAUUSD")
    assert logged_errors.take(ConnectionError) == 1
    assert rig.trades()[0].status == records.PENDING
    client.take()
    rig.clock.advance(MONITOR_INTERVAL)  # the monitor finds the order by its comment
    [trade] = rig.trades()
    assert trade.status == records.OPEN and trade.ticket is not None
    assert client.take() == [messages.trade_placed("XAUUSD")]  # message 6, late but told
    rig.clock.pump([MONITOR_INTERVAL] * SIGNAL_INTERVAL)
    assert len(rig.broker.orders) == 1
    assert [m["message"] for m in client.take()] == [messages.ACTIVE_TRADE] * SIGNAL_INTERVAL


def test_an_order_that_never_filled_is_cancelled(inline_store, logged_errors):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.broker.lose_next_answer = True
    client = rig.stream()
    assert logged_errors.take(ConnectionError) == 1
    rig.broker.positions.clear()  # the order never reached the market
    client.take()
    # not found twice: it may still be on its way
    rig.clock.pump([MONITOR_INTERVAL] * (NOT_FOUND_LOOKS - 1))
    assert rig.trades()[0].status == records.PENDING and client.take() == []
    rig.clock.advance(MONITOR_INTERVAL)  # not found a third time
    assert rig.trades()[0].status == records.CANCELLED
    # told, and checking starts over at once
    assert client.take() == [
        messages.trade_not_placed("XAUUSD", "order never filled"),
        checking("EURUSD"),
        checking("XAUUSD"),
    ]
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-2:] == [checking("EURUSD"), checking("XAUUSD")]


def test_restart_resumes_an_open_trade_without_a_new_order(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.stream()
    rig.session.stopService()

    restarted = rig.new_session()  # same store and broker: a restarted server
    assert list(restarted.live_trades) == [1]
    client = rig.stream(restarted)
    assert client.take() == []  # no report known yet, and no signal checks: the trade is open
    rig.clock.advance(MONITOR_INTERVAL)
    [report] = client.take()
    assert report["message"] == "active trade in progress"
    rig.broker.set_bid("XAUUSD", "2345.00")
    rig.clock.advance(MONITOR_INTERVAL)
    assert client.take()[0]["data"]["result"] == "profit"
    assert len(rig.broker.orders) == 1


def test_restart_with_a_pending_trade_finds_its_order(inline_store, logged_errors):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.broker.lose_next_answer = True
    rig.stream()
    logged_errors.take(ConnectionError)
    rig.session.stopService()
    restarted = rig.new_session()
    assert restarted.live_trades[1].status == records.PENDING
    rig.clock.advance(MONITOR_INTERVAL)
    assert rig.trades()[0].status == records.OPEN
    assert len(rig.broker.orders) == 1


def test_restart_adopts_a_position_given_up_on_and_records_its_real_result(inline_store, logged_errors):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.broker.lose_next_answer = True
    rig.stream()
    logged_errors.take(ConnectionError)
    hidden = rig.broker.positions.pop(1001)  # not found when looked up: cancelled
    rig.clock.pump([MONITOR_INTERVAL] * NOT_FOUND_LOOKS)
    assert rig.trades()[0].status == records.CANCELLED
    rig.session.stopService()

    rig.broker.positions[hidden.ticket] = hidden  # ...but the order did fill
    restarted = rig.new_session()
    [trade] = rig.trades()
    assert (trade.status, trade.ticket, trade.error) == (records.OPEN, hidden.ticket, None)
    assert list(restarted.live_trades) == [trade.id]
    client = rig.stream(restarted)
    rig.broker.set_bid("XAUUSD", "2320.00")
    rig.clock.advance(MONITOR_INTERVAL)
    [done] = [m for m in client.take() if m["message"] == messages.TRADE_COMPLETED]
    assert done["data"]["result"] == "loss" and done["data"]["trade_id"] == trade.id
    assert rig.trades()[0].profit == rig.broker.closed[hidden.ticket].profit
    assert len(rig.broker.orders) == 1


def test_a_position_that_turns_up_later_is_adopted_before_any_new_order(inline_store, logged_errors):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.broker.lose_next_answer = True
    client = rig.stream()
    logged_errors.take(ConnectionError)
    late = rig.broker.positions.pop(1001)
    rig.clock.pump([MONITOR_INTERVAL] * NOT_FOUND_LOOKS)
    assert rig.trades()[0].status == records.CANCELLED
    rig.broker.positions[late.ticket] = late  # it filled after all
    buy_xauusd(rig)  # and the strategy signals XAUUSD again
    client.take()
    rig.clock.advance(SIGNAL_INTERVAL)
    [trade] = rig.trades()
    assert (trade.status, trade.ticket) == (records.OPEN, late.ticket)
    assert len(rig.broker.orders) == 1  # XAUUSD was busy: no second order
    assert messages.signal(BUY, "XAUUSD") not in client.take()


def test_a_position_no_trade_ever_named_is_adopted_as_a_new_trade(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.stream()
    rig.session.stopService()
    [position] = rig.broker.positions.values()
    rig.broker.positions[position.ticket] = attrs.evolve(position, comment="by hand")
    inline_store.run(lambda conn: conn.execute(schema.trades.delete()))  # a store restored from before it
    restarted = rig.new_session()
    [trade] = rig.trades()
    assert (trade.status, trade.ticket, trade.comment, trade.symbol) == (records.OPEN, position.ticket, "by hand", "XAUUSD")
    assert (trade.lot_size, trade.open_price) == (position.volume, position.open_price)
    # adopting again finds nothing new
    restarted.stopService()
    rig.new_session()
    assert len(rig.trades()) == 1


def test_an_always_on_account_trades_with_nobody_connected(inline_store):
    rig = Rig(inline_store, always_on=True)
    assert rig.strategy.evaluations == 2  # checked at start, nobody connected
    buy_xauusd(rig)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert rig.trades()[0].status == records.OPEN
    rig.broker.set_bid("XAUUSD", "2341.00")
    rig.clock.advance(MONITOR_INTERVAL)
    assert rig.trades()[0].status == records.CLOSED
    assert len(inline_store.pending_events(rig.account.id).result) == 1


def test_manager_shares_sessions_resumes_live_ones_and_drops_idle_ones(inline_store):
    rig = Rig(inline_store)

    class Backend:
        def broker_for(self, key, balance):
            return rig.broker

    def manager():
        m = SessionManager(
            inline_store, Backends(Backend(), rig.clock), rig.strategy, load_plan, rig.clock,
            SIGNAL_INTERVAL, MONITOR_INTERVAL,
        )
        m.startService()
        assert m.ready.called
        return m

    first = manager()
    assert first.sessions == {}  # nothing live, nobody always-on
    connection = Recorder()
    a = first.session_for(rig.account, connection).result
    b = first.session_for(rig.account).result
    assert a is b
    buy_xauusd(rig)
    a.start_streaming(connection)
    a.detach(connection)
    rig.clock.advance(0)
    assert first.get(rig.account.id) is a  # a trade is live: kept
    first.stopService()

    second = manager()  # a restart resumes the account with the live trade
    assert list(second.get(rig.account.id).live_trades) == [1]
    rig.broker.set_bid("XAUUSD", "2341.00")
    rig.clock.advance(MONITOR_INTERVAL)
    rig.clock.advance(0)
    assert second.get(rig.account.id) is None  # closed, nobody attached: dropped
    second.stopService()

"""
Webhook alerts in a session: driven by a `Clock` on the scripted market, with
the real store. An alert is traded by the account's next check and only then,
once, within its validity, never past the session's rules; it survives a
restart.
"""

import json
from decimal import Decimal

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from tradebot.broker import BUY, SELL
from tradebot.loops import AccountSession
from tradebot.plans.files import load_plan
from tradebot.signals.signaljson import BadSignal
from tradebot.signals.strategies import FixedStops, Signal
from tradebot.store import schema
from tradebot.store.tokens import hash_token
from tradebot.trading import alerts, messages
from tradebot.trading.alerts import AlertQueue, UnknownWebhook
from tradebot.trading.market import MarketData

from .scripted import ScriptedBroker, ScriptedStrategy
from .test_loops import Recorder

SIGNAL_INTERVAL = 60
MONITOR_INTERVAL = 1
SECRET = "the-webhook-secret"
TTL = 300


def result(d):
    """The result of a Deferred that has fired (the inline store runs at once)."""
    assert d.called
    outcome = []
    d.addBoth(outcome.append)
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]


class Rig:
    """Alice's session (EURUSD, XAUUSD) with an alert queue, on a scripted
    market; she is subscribed to SECRET."""

    def __init__(self, store, max_open_trades=1, clock=None, queue=None):
        self.store = store
        self.clock = clock or Clock()
        self.broker = ScriptedBroker(self.clock)
        self.strategy = ScriptedStrategy()
        existing = result(store.account_by_name("alice"))
        self.account = existing or result(
            store.add_account("alice", ("EURUSD", "XAUUSD"), Decimal("10000"), "default", max_open_trades, False, hash_token("t"))
        )
        if existing is None:
            result(store.run(alerts.thd_set_webhook, "alice", hash_token(SECRET), 0.0))
        self.alerts = queue or AlertQueue(store, self.clock, ttl=TTL)
        result(defer.ensureDeferred(self.alerts.start()))
        self.session = AccountSession(
            self.account,
            store,
            self.broker,
            MarketData(self.clock),
            self.strategy,
            load_plan,
            self.clock,
            SIGNAL_INTERVAL,
            MONITOR_INTERVAL,
            alerts=self.alerts,
        )
        self.session.startService()
        assert self.session.ready.called

    def stream(self):
        connection = Recorder()
        self.session.attach(connection)
        self.session.start_streaming(connection)
        return connection

    def alert(self, **body):
        return result(defer.ensureDeferred(self.alerts.receive(SECRET, json.dumps(body).encode())))

    def statuses(self):
        with self.store.engine.connect() as conn:
            rows = conn.execute(schema.alerts.select().order_by(schema.alerts.c.id)).all()
        return [(row.symbol, row.side, row.status) for row in rows]


def checks(*symbols):
    return [messages.checking(s) for s in symbols]


def test_an_alert_is_traded_at_the_next_check_and_only_once(inline_store):
    rig = Rig(inline_store)
    client = rig.stream()
    assert client.take() == checks("EURUSD", "XAUUSD")
    queued = rig.alert(symbol="XAUUSD", action="buy", sl_distance="5", tp_distance=10.5)
    assert (queued.symbol, queued.side, queued.expires_at) == ("XAUUSD", BUY, TTL)
    assert client.take() == []  # queued, not traded at once
    asked = rig.strategy.evaluations
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take() == checks("EURUSD", "XAUUSD") + [
        messages.signal(BUY, "XAUUSD"),
        messages.trade_placed("XAUUSD"),
    ]
    # the strategy was asked about EURUSD only, the alert answered for XAUUSD
    assert rig.strategy.evaluations == asked + 1
    [order] = rig.broker.orders
    # at the ask 2330.20: stop 5 under it, take 10.50 over it
    assert (order.side, order.stop_loss, order.take_profit) == (BUY, Decimal("2325.20"), Decimal("2340.70"))
    assert rig.statuses() == [("XAUUSD", BUY, alerts.TAKEN)]
    # the trade closes at its take profit; the alert is not traded again
    rig.broker.set_bid("XAUUSD", "2341")
    rig.clock.advance(MONITOR_INTERVAL)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert [m for m in client.take() if m["message"] in (BUY, SELL)] == []
    assert len(rig.broker.orders) == 1


def test_an_alert_waits_while_the_session_has_no_room_then_trades(inline_store):
    rig = Rig(inline_store)
    rig.strategy.queue("XAUUSD", Signal(BUY, Decimal("5.00"), Decimal("10.00")))
    client = rig.stream()
    assert len(rig.broker.orders) == 1  # one trade open: max_open_trades 1
    rig.alert(symbol="EURUSD", action="sell", sl=1.09, tp="1.08")
    rig.clock.advance(SIGNAL_INTERVAL * 2)
    assert len(rig.broker.orders) == 1
    assert rig.statuses() == [("EURUSD", SELL, alerts.QUEUED)]
    # the trade closes (stop loss): the alert is the next check's
    rig.broker.set_bid("XAUUSD", "2325")
    rig.clock.advance(MONITOR_INTERVAL)
    assert [m["message"] for m in client.take() if m["message"] in (BUY, SELL)] == [BUY, SELL]
    order = rig.broker.orders[-1]
    assert (order.symbol, order.side, order.stop_loss, order.take_profit) == (
        "EURUSD", SELL, Decimal("1.09000"), Decimal("1.08000")
    )
    assert rig.statuses() == [("EURUSD", SELL, alerts.TAKEN)]


def test_an_alert_waits_while_the_broker_is_unavailable(inline_store):
    rig = Rig(inline_store)
    client = rig.stream()
    rig.broker.available = False
    rig.alert(symbol="XAUUSD", action="sell", sl_distance=5, tp_distance=10)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert rig.broker.orders == [] and rig.statuses() == [("XAUUSD", SELL, alerts.QUEUED)]
    rig.broker.available = True
    rig.clock.advance(SIGNAL_INTERVAL)
    assert [o.side for o in rig.broker.orders] == [SELL]
    assert messages.signal(SELL, "XAUUSD") in client.take()


def test_an_alert_without_stops_gets_the_strategys(inline_store):
    rig = Rig(inline_store)
    rig.strategy.stops = FixedStops(200, 300)  # XAUUSD: 2.00 and 3.00
    rig.alert(symbol="XAUUSD", action="sell")
    rig.stream()
    [order] = rig.broker.orders
    # entered at the bid 2330.00
    assert (order.side, order.stop_loss, order.take_profit) == (SELL, Decimal("2332.00"), Decimal("2327.00"))


def test_an_expired_alert_never_trades(inline_store, logged_errors):
    rig = Rig(inline_store)
    rig.alert(symbol="XAUUSD", action="buy", sl_distance=5, tp_distance=10)
    lines = []
    globalLogPublisher.addObserver(lines.append)
    try:
        rig.clock.advance(TTL)  # nobody streams meanwhile: no check
        client = rig.stream()
    finally:
        globalLogPublisher.removeObserver(lines.append)
    assert client.take() == checks("EURUSD", "XAUUSD")
    assert rig.broker.orders == []
    assert rig.statuses() == [("XAUUSD", BUY, alerts.EXPIRED)]
    assert any("expired unused" in formatEvent(e) for e in lines)


def test_a_newer_alert_replaces_the_queued_one(inline_store):
    rig = Rig(inline_store)
    rig.alert(symbol="XAUUSD", action="buy", sl_distance=5, tp_distance=10)
    rig.alert(symbol="XAUUSD", action="sell", sl_distance=5, tp_distance=10)
    rig.alert(symbol="EURUSD", action="buy", sl_distance=0.001, tp_distance=0.002)
    client = rig.stream()
    sides = [(m["message"], m["data"]["symbol"]) for m in client.take() if m["message"] in (BUY, SELL)]
    assert sides == [(BUY, "EURUSD")]  # one trade at a time: XAUUSD's alert waits
    assert rig.statuses() == [
        ("XAUUSD", BUY, alerts.REPLACED),
        ("XAUUSD", SELL, alerts.QUEUED),
        ("EURUSD", BUY, alerts.TAKEN),
    ]


def test_a_queued_alert_survives_a_restart_within_its_validity(inline_store):
    clock = Clock()
    before = Rig(inline_store, clock=clock)
    before.alert(symbol="XAUUSD", action="buy", sl_distance=5, tp_distance=10)
    before.session.stopService()
    clock.advance(TTL - 1)
    # a new server: a queue and a session of its own on the same database
    after = Rig(inline_store, clock=clock)
    client = after.stream()
    assert messages.signal(BUY, "XAUUSD") in client.take()
    assert after.statuses() == [("XAUUSD", BUY, alerts.TAKEN)]


def test_an_alert_past_its_validity_at_a_restart_is_dropped(inline_store):
    clock = Clock()
    before = Rig(inline_store, clock=clock)
    before.alert(symbol="XAUUSD", action="buy", sl_distance=5, tp_distance=10)
    before.session.stopService()
    clock.advance(TTL)
    after = Rig(inline_store, clock=clock)
    assert after.alerts.pending(after.account.id, "XAUUSD") is None
    after.stream()
    assert after.broker.orders == []
    assert after.statuses() == [("XAUUSD", BUY, alerts.EXPIRED)]


def test_a_stop_price_on_the_wrong_side_is_told_and_nothing_is_sent(inline_store):
    rig = Rig(inline_store)
    rig.alert(symbol="XAUUSD", action="buy", sl=2400, tp=2500)  # the stop over the ask 2330.20
    client = rig.stream()
    assert client.take()[-2:] == [
        messages.signal(BUY, "XAUUSD"),
        messages.trade_not_placed(
            "XAUUSD", "stop loss 2400.00 is not below the entry price 2330.20 by at least 0.40"
        ),
    ]
    assert rig.broker.orders == [] and result(inline_store.trades("alice")) == []
    assert rig.statuses() == [("XAUUSD", BUY, alerts.TAKEN)]


class FailingTake:
    """The store, except that marking an alert taken fails once (a database
    that went away for that moment)."""

    def __init__(self, store):
        self._store = store
        self.failed = False

    def __getattr__(self, name):
        return getattr(self._store, name)

    def run(self, fn, *args, **kwargs):
        if fn is alerts.thd_take_alert and not self.failed:
            self.failed = True
            return defer.fail(ConnectionError("the database went away"))
        return self._store.run(fn, *args, **kwargs)


def test_an_alert_whose_taking_failed_is_tried_again_not_lost(inline_store, logged_errors):
    clock = Clock()
    queue = AlertQueue(FailingTake(inline_store), clock, ttl=TTL)
    rig = Rig(inline_store, clock=clock, queue=queue)
    rig.alert(symbol="XAUUSD", action="buy", sl_distance=5, tp_distance=10)
    client = rig.stream()
    assert rig.broker.orders == [] and logged_errors.take(ConnectionError) == 1
    assert rig.statuses() == [("XAUUSD", BUY, alerts.QUEUED)]
    rig.clock.advance(SIGNAL_INTERVAL)
    assert messages.trade_placed("XAUUSD") in client.take()
    assert len(rig.broker.orders) == 1
    assert rig.statuses() == [("XAUUSD", BUY, alerts.TAKEN)]


def fail_once(broker, name, error):
    """Make the broker's method `name` fail its next call with `error`."""
    real = getattr(broker, name)

    def failing(*args, **kwargs):
        setattr(broker, name, real)
        return defer.fail(error)

    setattr(broker, name, failing)


def test_an_alert_whose_sizing_meets_an_unavailable_broker_is_queued_again_and_trades_next(inline_store):
    from tradebot.broker import BrokerUnavailable

    rig = Rig(inline_store)
    client = rig.stream()
    rig.alert(symbol="XAUUSD", action="buy", sl_distance=5, tp_distance=10)
    fail_once(rig.broker, "calc_profit", BrokerUnavailable("the terminal did not answer"))
    rig.clock.advance(SIGNAL_INTERVAL)
    assert messages.trade_not_placed("XAUUSD", "the terminal did not answer") in client.take()
    assert rig.broker.orders == [] and rig.statuses() == [("XAUUSD", BUY, alerts.QUEUED)]
    rig.clock.advance(SIGNAL_INTERVAL)
    assert messages.trade_placed("XAUUSD") in client.take()
    assert [o.side for o in rig.broker.orders] == [BUY]
    assert rig.statuses() == [("XAUUSD", BUY, alerts.TAKEN)]


def test_an_alert_whose_order_the_broker_refuses_is_used_up(inline_store):
    from tradebot.broker import OrderRefused

    rig = Rig(inline_store)
    client = rig.stream()
    rig.alert(symbol="XAUUSD", action="buy", sl_distance=5, tp_distance=10)
    rig.broker.refuse_next = OrderRefused("not enough money", 10019)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert messages.trade_not_placed("XAUUSD", "not enough money") in client.take()
    rig.clock.advance(SIGNAL_INTERVAL * 2)
    assert len(rig.broker.orders) == 1  # the refused one: never tried again
    assert rig.statuses() == [("XAUUSD", BUY, alerts.TAKEN)]


def test_an_alert_is_queued_again_only_while_valid_and_not_over_a_newer_one(inline_store):
    rig = Rig(inline_store)
    first = rig.alert(symbol="XAUUSD", action="buy").alerts[0]
    assert result(inline_store.run(alerts.thd_take_alert, first.id, 1.0))
    newer = rig.alert(symbol="XAUUSD", action="sell").alerts[0]
    assert not result(inline_store.run(alerts.thd_release_alert, first.id, 2.0))  # a newer one waits
    assert result(inline_store.run(alerts.thd_take_alert, newer.id, 2.0))
    assert not result(inline_store.run(alerts.thd_release_alert, newer.id, TTL + 1.0))  # past its validity
    assert result(inline_store.run(alerts.thd_release_alert, newer.id, 3.0))
    assert rig.statuses() == [("XAUUSD", BUY, alerts.TAKEN), ("XAUUSD", SELL, alerts.QUEUED)]


# -- what is refused, queuing nothing --------------------------------------------------


def test_an_unknown_secret_or_a_removed_webhook_queues_nothing(inline_store):
    rig = Rig(inline_store)
    body = json.dumps({"symbol": "XAUUSD", "action": "buy"}).encode()
    with pytest.raises(UnknownWebhook):
        result(defer.ensureDeferred(rig.alerts.receive("another-secret", body)))
    rig.alert(symbol="XAUUSD", action="buy")
    assert result(inline_store.run(alerts.thd_clear_webhook, "alice")) is True
    with pytest.raises(UnknownWebhook):
        result(defer.ensureDeferred(rig.alerts.receive(SECRET, body)))
    # the queued one went with the webhook
    assert rig.statuses() == [("XAUUSD", BUY, alerts.REPLACED)]


def test_a_symbol_the_account_does_not_trade_is_refused(inline_store):
    rig = Rig(inline_store)
    with pytest.raises(BadSignal, match=r"'GBPUSD' is not traded by this webhook's account \(it trades EURUSD, XAUUSD\)"):
        rig.alert(symbol="GBPUSD", action="buy")
    assert rig.statuses() == []


def test_an_alert_whose_stop_is_no_price_is_refused_once_and_the_checks_go_on(inline_store):
    rig = Rig(inline_store)
    client = rig.stream()
    rig.alert(symbol="EURUSD", action="buy", sl_distance="5000", tp_distance="0.01")  # below zero
    rig.clock.advance(SIGNAL_INTERVAL)
    [refused] = [m for m in client.take() if m["message"] == messages.TRADE_NOT_PLACED]
    assert "is not a price" in refused["data"]["error"] and rig.broker.orders == []
    assert rig.statuses() == [("EURUSD", BUY, alerts.TAKEN)]  # used up: it would be refused again
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take() == checks("EURUSD", "XAUUSD")  # the next check runs as usual

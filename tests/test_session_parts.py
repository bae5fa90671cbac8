"""
The parts of a session, each on its own: a host class gives a part only the
state it uses (the session's fields), so each part's job is tested without
the others. The whole session is tested in test_loops.py and test_plan_live.py.
"""

from decimal import Decimal

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from tradebot.broker import BUY, SELL, BrokerUnavailable, OrderRefused, OrderRequest
from tradebot.plans.files import load_plan
from tradebot.signals.strategies import Signal
from tradebot.store import records
from tradebot.store.tokens import hash_token
from tradebot.trading import messages
from tradebot.trading.delivery import DeliveryPart
from tradebot.trading.placement import TRY_AGAIN, PlacementPart
from tradebot.trading.planning import PlanningPart
from tradebot.trading.planstate import PlanKeeper
from tradebot.trading.watch import CLOSE_RETRY_MAX, POSITION_CLOSED, WatchPart

from .scripted import ScriptedBroker
from .test_loops import Recorder


class Account:
    id = 1
    name = "alice"


class DeliveryHost(DeliveryPart):
    """The fields `DeliveryPart` uses, and counts of what it asked of the rest."""

    _log = Logger()

    def __init__(self):
        self.account = Account()
        self._metrics = None
        self._attached, self._streaming, self._latest_report = set(), {}, {}
        self._unmarked, self._marking = set(), set()
        self.encoded = []
        self.loops_updated = 0

    def _encode(self, message):
        self.encoded.append(message)
        return messages.encode(message)

    def _update_loops(self):
        self.loops_updated += 1


def test_delivery_frames_a_message_once_for_every_streaming_connection_and_none_for_the_attached():
    host = DeliveryHost()
    streaming, attached = Recorder(), Recorder()
    for connection in (streaming, attached):
        host.attach(connection)
    host._streaming[streaming] = set()
    other = Recorder()
    host._streaming[other] = set()
    assert host._publish(messages.checking("EURUSD")) == 2
    assert len(host.encoded) == 1  # one frame for both
    assert streaming.take() == other.take() == [messages.checking("EURUSD")]
    assert attached.take() == []
    host.detach(other)
    assert host.streaming_count == 1 and host.loops_updated == 1


class PlanningHost(PlanningPart):
    """The fields `PlanningPart._open_risk` uses."""

    def __init__(self, broker, trades):
        self._broker = broker
        self._trades = trades


class Trade:
    def __init__(self, id, ticket, status="open", symbol="EURUSD"):
        self.id, self.ticket, self.status, self.symbol = id, ticket, status, symbol


def test_planning_counts_what_the_open_trades_would_still_lose_at_their_stops():
    clock = Clock()
    broker = ScriptedBroker(clock)
    mine = broker.open_position(OrderRequest("EURUSD", SELL, Decimal("1.00"), Decimal("1.08700"), Decimal("1.08100"), "tb-1")).result
    theirs = broker.open_position(OrderRequest("XAUUSD", BUY, Decimal("1.00"), Decimal("2320"), Decimal("2340"), "tb-2")).result
    host = PlanningHost(broker, {1: Trade(1, mine.ticket)})
    risk = defer.ensureDeferred(host._open_risk()).result
    # the SELL at 1.08500 is 10 down at the ask 1.08510; at its stop it loses 200: 190 more
    assert risk == Decimal(190)
    assert theirs.ticket not in {t.ticket for t in host._trades.values()}  # only the session's own count


class WatchHost(WatchPart):
    """The fields `WatchPart.close_trades` uses, with a broker that refuses
    closes until told otherwise."""

    _log = Logger()

    def __init__(self, clock):
        self.account = Account()
        self._clock = clock
        self._trades = {}
        self.closing = {}
        self.refusal = OrderRefused("market closed", 10018)
        self.completed = []
        host = self

        class Broker:
            def close_position(self, ticket):
                if host.refusal is not None:
                    return defer.fail(host.refusal)
                return defer.succeed("closed")

        self._broker = Broker()

    async def _complete(self, trade, closed):
        self.completed.append((trade.id, closed))
        self._trades.pop(trade.id, None)
        self.closing.pop(trade.id, None)


def test_watch_asks_a_refused_close_again_with_a_back_off_that_doubles_to_a_minute():
    clock = Clock()
    host = WatchHost(clock)
    trade = host._trades[7] = Trade(7, 70)
    waits = []
    for _ in range(9):
        defer.ensureDeferred(host.close_trades([trade], "a test"))
        waits.append(host.closing[7].next_at - clock.seconds())
        clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8, 16, 32, CLOSE_RETRY_MAX, CLOSE_RETRY_MAX, CLOSE_RETRY_MAX]
    assert (host.closing[7].attempts, host.closing[7].last_error) == (9, "market closed")
    host.refusal = None
    defer.ensureDeferred(host.close_trades([trade], "a test"))
    assert host.completed == [(7, "closed")] and host.closing == {}


def test_watch_leaves_a_position_already_gone_to_the_monitor():
    host = WatchHost(Clock())
    trade = host._trades[8] = Trade(8, 80)
    host.refusal = OrderRefused("position already closed", POSITION_CLOSED)
    defer.ensureDeferred(host.close_trades([trade], "a test"))
    assert host.completed == [] and host.closing[8].last_error == "already closed at the broker"


class PlacementHost(PlacementPart):
    """The fields `PlacementPart._place` uses: a real store and plan state, a
    scripted broker; what it asks of the other parts is kept."""

    _log = Logger()

    def __init__(self, store, broker, clock):
        self.account = store.add_account("alice", ["XAUUSD"], Decimal("10000"), "default", 1, False, hash_token("t")).result
        self._store, self._broker = store, broker
        self._plan = PlanKeeper(self.account.id, lambda: load_plan("default"), store, clock, self._log)
        self._trades, self._placing = {}, set()
        self.running = True
        self.published, self.counted, self.days_opened = [], [], 0

    def _publish(self, message):
        self.published.append(message)

    async def _balance_and_equity(self):
        return await self._broker.balance(), await self._broker.equity()

    async def _open_risk(self):
        return Decimal(0)

    def _count_trade(self, outcome):
        self.counted.append(outcome)

    async def _plan_opened(self):
        self.days_opened += 1


def _place(host):
    spec = host._broker.symbol("XAUUSD").result
    signal = Signal(BUY, Decimal("5.00"), Decimal("10.00"))
    return defer.ensureDeferred(host._place("XAUUSD", spec, signal)).result


def _stored(store):
    return [(t.status, t.comment, t.ticket) for _, t in store.trades("alice").result]


def test_placement_records_the_intent_before_the_order_and_the_fill_after_it(inline_store):
    clock = Clock()
    broker = ScriptedBroker(clock)
    host = PlacementHost(inline_store, broker, clock)
    seen_at_order = []
    send = broker.open_position

    def open_position(request):
        seen_at_order.append(_stored(inline_store))
        return send(request)

    broker.open_position = open_position
    assert _place(host) is True
    [order] = broker.orders
    assert seen_at_order == [[(records.PENDING, order.comment, None)]]
    [(status, comment, ticket)] = _stored(inline_store)
    assert (status, comment) == (records.OPEN, order.comment) and ticket in broker.positions
    assert host.published == [messages.trade_placed("XAUUSD")] and host.days_opened == 1
    assert host._placing == set() and [t.status for t in host._trades.values()] == [records.OPEN]


def test_placement_stores_a_refused_order_as_refused_and_lets_it_go(inline_store):
    clock = Clock()
    broker = ScriptedBroker(clock)
    host = PlacementHost(inline_store, broker, clock)
    broker.refuse_next = OrderRefused("no money", 10019)
    assert _place(host) is False
    assert [s for s, _, _ in _stored(inline_store)] == [records.REFUSED]
    assert host._trades == {} and host.counted == ["refused"]
    assert host.published == [messages.trade_not_placed("XAUUSD", "no money")]


def test_placement_keeps_an_order_of_unknown_outcome_pending_to_be_looked_up(inline_store):
    clock = Clock()
    broker = ScriptedBroker(clock)
    host = PlacementHost(inline_store, broker, clock)
    broker.refuse_next = BrokerUnavailable("the terminal stopped answering")
    assert _place(host) is False
    [(status, comment, _)] = _stored(inline_store)
    assert status == records.PENDING and [t.comment for t in host._trades.values()] == [comment]
    assert host.published == [] and host._placing == set()


def test_placement_sends_nothing_once_the_session_stops(inline_store):
    clock = Clock()
    broker = ScriptedBroker(clock)
    host = PlacementHost(inline_store, broker, clock)
    host.running = False
    assert _place(host) is TRY_AGAIN
    assert broker.orders == [] and _stored(inline_store) == []

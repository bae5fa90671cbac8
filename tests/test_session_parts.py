"""
The parts of a session, each on its own: a host class gives a part only the
state it uses (the session's fields), so each part's job is tested without
the others. The whole session is tested in test_loops.py and test_plan_live.py.
"""

from decimal import Decimal

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from tradebot.broker import BUY, SELL, OrderRefused
from tradebot.trading import messages
from tradebot.trading.delivery import DeliveryPart
from tradebot.trading.planning import PlanningPart
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
    from tradebot.broker import OrderRequest

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

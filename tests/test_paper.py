"""
The paper broker: the broker contract, and what a simulated MT5 account must
get right (fills at the level crossed, MT5 profit arithmetic, margin,
reproducibility by seed, a restart that loses nothing).
"""

from decimal import Decimal

import numpy as np
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from tradebot.backtest.bars import bars_from_arrays
from tradebot.broker import BUY, SELL, BrokerUnavailable, BrokerURL, OrderRefused, OrderRequest
from tradebot.brokers.paper import (
    CATALOG,
    RETCODE_INVALID_STOPS,
    RETCODE_INVALID_VOLUME,
    RETCODE_NO_MONEY,
    WARM_UP_BARS,
    BarReplayMarket,
    PaperBackend,
    PaperMarket,
    walks,
)
from tradebot.brokers.registry import backend_from_url

from .broker_contract import BrokerContract, fails_with, result, run_until_closed, stops_around, wide_order

ORIGIN = 1_767_225_600.0  # 2026-01-01 00:00 UTC, a whole minute


class Harness:
    """A paper account on a market driven by a Clock."""

    symbols = ("EURUSD", "XAUUSD")

    def __init__(self, store=None, url="paper://?seed=7&speed=1", clock=None):
        self.clock = clock or Clock()
        self.backend = backend_from_url(url, store=store, reactor=self.clock)
        self.backend.origin = ORIGIN
        result(self.backend.start())
        self.broker = self.backend.broker_for("1", Decimal("10000"))

    def pass_time(self, seconds):
        self.clock.advance(seconds)


@pytest.fixture
def harness():
    return Harness()


class TestPaperContract(BrokerContract):
    """The paper broker keeps the broker contract."""


def test_the_url_sets_seed_speed_balance_and_leverage():
    backend = PaperBackend.from_url(BrokerURL.parse("paper://?seed=3&speed=600&balance=2500&leverage=30"))
    assert (backend.seed, backend.speed, backend.default_balance, backend.leverage) == (3, 600, 2500, 30)
    assert backend.url == "paper://?seed=3&speed=600&balance=2500&leverage=30"
    assert PaperBackend.from_url(BrokerURL.parse("paper")).seed == 7


@pytest.mark.parametrize(
    "url, complaint",
    [
        ("paper://?speed=0", "speed"),
        ("paper://?speed=fast", "speed"),
        ("paper://?seed=-1", "seed"),
        ("paper://?balance=0", "balance"),
        ("paper://?leverage=0", "leverage"),
        ("paper://?colour=red", "unknown parameter"),
    ],
)
def test_a_bad_url_is_a_clear_error(url, complaint):
    with pytest.raises(ValueError, match=complaint):
        backend_from_url(url)


def test_the_catalog_has_the_five_symbols_with_their_digits():
    assert {"XAUUSD", "EURUSD", "GBPUSD", "USDJPY", "BTCUSD"} <= set(CATALOG)
    digits = {name: spec.digits for name, spec in CATALOG.items()}
    assert digits == {"XAUUSD": 2, "EURUSD": 5, "GBPUSD": 5, "USDJPY": 3, "BTCUSD": 2}
    assert backend_from_url("paper").known_symbols() == frozenset(CATALOG)


def test_one_broker_per_account_on_one_shared_market(harness):
    again = harness.backend.broker_for("1", Decimal("5"))
    other = harness.backend.broker_for("2", Decimal("500"))
    assert again is harness.broker and other is not harness.broker
    assert result(other.balance()) == Decimal("500")
    assert result(other.tick("XAUUSD")) == result(harness.broker.tick("XAUUSD"))


def test_the_market_moves_with_the_clock_and_speed():
    slow, fast = Harness(url="paper://?seed=7&speed=1"), Harness(url="paper://?seed=7&speed=60")
    start = len(result(slow.broker.candles("EURUSD", 1000)))
    slow.pass_time(600)
    fast.pass_time(10)
    assert len(result(slow.broker.candles("EURUSD", 1000))) - start == 10
    assert result(fast.broker.candles("EURUSD", 1000)).close[-10:].tolist() == (
        result(slow.broker.candles("EURUSD", 1000)).close[-10:].tolist()
    )


def test_the_same_seed_makes_the_same_market_and_another_seed_another():
    one, two, other = Harness(), Harness(), Harness(url="paper://?seed=8")
    for h in (one, two, other):
        h.pass_time(3600)
    closes = [result(h.broker.candles("XAUUSD", 300)).close for h in (one, two, other)]
    assert np.array_equal(closes[0], closes[1])
    assert not np.array_equal(closes[0], closes[2])


def test_the_warm_up_gives_a_strategy_its_history_at_once(harness):
    candles = result(harness.broker.candles("XAUUSD", 1000))
    assert len(candles) >= 300
    assert np.all(np.diff(candles.time) == 60)


def test_a_stop_loss_fills_at_the_first_tick_past_its_level_and_costs_what_mt5_says(harness):
    # EURUSD, a BUY of 0.50 with a tight stop and a far target: the stop is hit
    spec = CATALOG["EURUSD"]
    tick = result(harness.broker.tick("EURUSD"))
    sl, tp = stops_around(spec, tick, BUY, 20, 2000)
    position = result(harness.broker.open_position(OrderRequest("EURUSD", BUY, Decimal("0.50"), sl, tp, "tb-1")))
    closed = run_until_closed(harness, position.ticket)
    assert closed.reason == "sl"
    # the bid of the second that reached the stop: at it or a second's move past it
    assert sl - 10 * spec.point <= closed.close_price <= sl
    # (close - open) x 100,000 x 0.50, in USD
    assert closed.profit == ((closed.close_price - position.open_price) * 100000 * Decimal("0.50")).quantize(
        Decimal("0.01")
    )
    assert closed.profit < 0
    assert result(harness.broker.balance()) == Decimal("10000") + closed.profit


def test_a_take_profit_fills_at_the_first_tick_past_its_level_for_gold(harness):
    # XAUUSD, a SELL of 0.20 with a near target and a far stop
    spec = CATALOG["XAUUSD"]
    tick = result(harness.broker.tick("XAUUSD"))
    sl, tp = stops_around(spec, tick, SELL, 5000, 40)
    position = result(harness.broker.open_position(OrderRequest("XAUUSD", SELL, Decimal("0.20"), sl, tp, "tb-2")))
    assert position.open_price == tick.bid
    closed = run_until_closed(harness, position.ticket)
    assert closed.reason == "tp"
    # the ask of the second that reached the target: at it or a little below
    assert tp - 50 * spec.point <= closed.close_price <= tp
    # (open - close) x 100 oz x 0.20
    assert closed.profit == (position.open_price - closed.close_price) * 100 * Decimal("0.20")
    assert closed.profit > 0
    assert result(harness.broker.balance()) == Decimal("10000") + closed.profit


def test_a_yen_profit_is_converted_at_the_close_price_the_rate_when_it_closes(harness):
    profit = result(harness.broker.calc_profit(BUY, "USDJPY", Decimal("1"), Decimal("150.000"), Decimal("150.100")))
    # 0.100 x 100,000 = 10,000 yen, at 150.100 yen a dollar
    assert profit == Decimal("10000.000") / Decimal("150.100")
    # the loss at a stop converts at the stop's price, whatever the market says now
    assert result(harness.broker.tick("USDJPY")).bid != Decimal("150.012")
    at_stop = result(harness.broker.calc_profit(BUY, "USDJPY", Decimal("1"), Decimal("151.512"), Decimal("150.012")))
    assert at_stop.quantize(Decimal("0.01")) == Decimal("-999.92")  # not -990.10 at 151.50


def test_an_open_position_reports_its_floating_profit(harness):
    request = wide_order(harness, "XAUUSD", SELL, volume="0.30")
    position = result(harness.broker.open_position(request))
    harness.pass_time(30)
    now = result(harness.broker.position(position.ticket))
    ask = result(harness.broker.tick("XAUUSD")).ask
    assert now.current_price == ask
    assert now.profit == ((position.open_price - ask) * 100 * Decimal("0.30")).quantize(Decimal("0.01"))


def test_refusals_carry_mt5_return_codes(harness):
    spec = CATALOG["EURUSD"]
    tick = result(harness.broker.tick("EURUSD"))
    sl, tp = stops_around(spec, tick, BUY, 100, 100)
    too_close = stops_around(spec, tick, BUY, 1, 100)
    for request, code in (
        (OrderRequest("EURUSD", BUY, Decimal("0.015"), sl, tp, "tb-1"), RETCODE_INVALID_VOLUME),
        (OrderRequest("EURUSD", BUY, Decimal("0.10"), *too_close, "tb-2"), RETCODE_INVALID_STOPS),
        # 50 lots of EURUSD need 54,000 of margin at 1:100; the account holds 10,000
        (OrderRequest("EURUSD", BUY, Decimal("50"), sl, tp, "tb-3"), RETCODE_NO_MONEY),
    ):
        refused = fails_with(harness.broker.open_position(request), OrderRefused)
        assert refused.code == code, refused.reason
    assert result(harness.broker.balance()) == Decimal("10000")
    assert harness.broker.positions == {}


def test_positions_and_balances_survive_a_restart(inline_store):
    first = Harness(store=inline_store)
    closed_request = wide_order(first, "EURUSD", BUY, comment="tb-1", stop=20, take=2000)
    closed_ticket = result(first.broker.open_position(closed_request)).ticket
    lost = run_until_closed(first, closed_ticket).profit
    kept = result(first.broker.open_position(wide_order(first, "XAUUSD", BUY, comment="tb-2")))
    price = result(first.broker.tick("XAUUSD")).bid
    result(first.backend.stop())

    second = Harness(store=inline_store)
    broker = second.backend.broker_for("1", Decimal("99999"))  # the saved balance wins
    assert result(broker.balance()) == Decimal("10000") + lost
    resumed = result(broker.position(kept.ticket))
    assert (resumed.open_price, resumed.stop_loss, resumed.volume) == (kept.open_price, kept.stop_loss, kept.volume)
    assert result(broker.tick("XAUUSD")).bid == price  # the market carries on where it stopped
    assert result(broker.find_by_comment("tb-1")).profit == lost
    # tickets keep counting up, and the resumed position still closes
    new = result(broker.open_position(wide_order(second, "EURUSD", SELL, comment="tb-3")))
    assert new.ticket > kept.ticket
    closed = run_until_closed(second, kept.ticket, step=60)
    assert result(broker.balance()) == Decimal("10000") + lost + closed.profit


def test_a_fill_is_saved_before_it_is_reported(inline_store):
    first = Harness(store=inline_store)
    position = result(first.broker.open_position(wide_order(first, "EURUSD", comment="tb-5")))
    # no stop(): the process dies right after the fill was reported
    second = Harness(store=inline_store)
    assert result(second.backend.broker_for("1", Decimal("1")).position(position.ticket)) is not None


def test_a_close_by_the_program_is_saved_before_it_is_answered(inline_store):
    first = Harness(store=inline_store)
    position = result(first.broker.open_position(wide_order(first, "EURUSD", comment="tb-6")))
    closed = result(first.broker.close_position(position.ticket))
    # no stop(): the process dies right after the close was answered
    second = Harness(store=inline_store)
    broker = second.backend.broker_for("1", Decimal("1"))
    assert result(broker.position(position.ticket)) is None
    assert result(broker.closed_position(position.ticket)) == closed
    assert result(broker.balance()) == Decimal("10000") + closed.profit


class HeldWrites:
    """Wraps a store so that each broker-state write waits until the test
    lets it go; the write itself then really happens."""

    def __init__(self, store):
        self._store = store
        self.held = []  # (documents, Deferred) of the writes not yet let go
        self.written = []  # the documents of each write let go, in order

    def __getattr__(self, name):
        return getattr(self._store, name)

    def save_broker_state(self, backend, documents):
        done = defer.Deferred()
        self.held.append((backend, documents, done))
        return done

    def release(self):
        backend, documents, done = self.held.pop(0)
        self.written.append(documents)
        self._store.save_broker_state(backend, documents).chainDeferred(done)


def test_saves_asked_for_during_a_write_coalesce_into_one_next_write(inline_store):
    store = HeldWrites(inline_store)
    harness = Harness(store=store)
    first = harness.broker.open_position(wide_order(harness, "EURUSD", comment="tb-1"))
    assert len(store.held) == 1 and not first.called  # a fill waits for its save
    # a burst of changes while that write is under way: one more write, not many
    later = [harness.broker.open_position(wide_order(harness, "XAUUSD", comment=f"tb-{n}")) for n in range(2, 40)]
    saves = [harness.backend.save() for _ in range(100)]
    assert len(store.held) == 1
    store.release()
    assert first.called and not any(d.called for d in later + saves)
    assert len(store.held) == 1  # the one next write, holding every change asked for
    store.release()
    assert all(d.called for d in later + saves) and not store.held
    tickets = {result(d).ticket for d in [first] + later}
    assert len(store.written) == 2
    saved = Harness(store=inline_store).backend.broker_for("1", Decimal("1"))
    assert {t for t in tickets if result(saved.position(t)) is not None} == tickets


def test_a_failed_write_fails_its_waiters_and_the_next_save_still_runs(inline_store):
    store = HeldWrites(inline_store)
    harness = Harness(store=store)
    first = harness.backend.save()
    second = harness.backend.save()
    backend, documents, done = store.held.pop(0)
    done.errback(OSError("disk full"))
    failures = []
    first.addErrback(failures.append)
    assert failures and failures[0].check(OSError)
    assert len(store.held) == 1 and not second.called
    store.release()
    assert second.called and result(second) is None


def test_a_write_carries_only_the_accounts_that_changed_and_a_failed_one_carries_them_again(inline_store):
    store = HeldWrites(inline_store)
    harness = Harness(store=store)
    other = harness.backend.broker_for("2", Decimal("5000"))
    harness.backend.save()
    store.release()
    assert {"account:1", "account:2"} <= set(store.written[-1])
    opened = harness.broker.open_position(wide_order(harness, "EURUSD", comment="tb-1"))
    assert set(store.held[0][1]) == {"market", "account:1"}
    store.held.pop(0)[2].errback(OSError("disk full"))
    assert opened.called and isinstance(opened.result, Failure)
    opened.addErrback(lambda f: None)
    harness.backend.save()
    assert set(store.held[0][1]) == {"market", "account:1"}  # carried again
    store.release()
    fresh = Harness(store=inline_store).backend
    assert result(fresh.broker_for("2", Decimal("1")).balance()) == Decimal("5000")
    assert len(fresh.broker_for("1", Decimal("1")).positions) == 1
    assert other.changed is False


def test_a_close_is_told_only_once_it_is_saved(inline_store, logged_errors):
    first = Harness(store=inline_store)
    request = wide_order(first, "EURUSD", BUY, comment="tb-6", stop=20, take=2000)
    ticket = result(first.broker.open_position(request)).ticket
    save = inline_store.save_broker_state
    inline_store.save_broker_state = lambda *args: defer.fail(OSError("disk full"))
    while ticket in first.broker.positions:  # the market closes it; saving that fails
        first.pass_time(1)
        first.backend.market.advance()
    assert logged_errors.take(OSError) == 1
    # neither the close nor the balance it made is told while it is not saved
    fails_with(first.broker.position(ticket), BrokerUnavailable)
    fails_with(first.broker.closed_position(ticket), BrokerUnavailable)
    fails_with(first.broker.balance(), BrokerUnavailable)

    inline_store.save_broker_state = save  # the database takes writes again
    closed = result(first.broker.closed_position(ticket))
    # no stop(): the process dies right after the close was told
    second = Harness(store=inline_store)
    broker = second.backend.broker_for("1", Decimal("1"))
    assert result(broker.closed_position(ticket)) == closed
    assert result(broker.balance()) == Decimal("10000") + closed.profit


# -- a replayed market: levels crossed inside a bar, and gaps -------------------------


def replay_with(bar, price=1.1000, n=WARM_UP_BARS + 20):
    """A EURUSD replay market on a Clock: flat bars at `price`, except the
    bar two minutes after trading starts, which is `bar` (open, high, low,
    close); with its clock and an account on it."""
    rows = np.full((n, 4), price)
    rows[WARM_UP_BARS + 2] = bar
    bars = bars_from_arrays("EURUSD", ORIGIN + 60.0 * np.arange(n), *rows.T)
    clock = Clock()
    market = BarReplayMarket(clock, "EURUSD", bars)
    backend = PaperBackend(reactor=clock, market=market)
    result(backend.start())
    return clock, backend.broker_for("1", Decimal("10000"))


def closed_after_the_bar(clock, broker, side, sl, tp, volume="1.00"):
    position = result(broker.open_position(OrderRequest("EURUSD", side, Decimal(volume), D(sl), D(tp), "tb-g")))
    clock.advance(3 * 60)  # past the bar
    closed = result(broker.closed_position(position.ticket))
    assert closed is not None, "the bar closed nothing"
    return position, closed


def D(text):
    return Decimal(text)


# BUY at the ask 1.10010 (spread 10 points); SELL at the bid 1.10000, closing at the ask.
GAPS = [
    # side, SL, TP, the bar, reason, close price: the gapped open, or the level crossed
    (BUY, "1.09800", "1.10400", (1.0950, 1.0960, 1.0940, 1.0955), "sl", "1.09500"),
    (BUY, "1.09800", "1.10400", (1.1060, 1.1070, 1.1050, 1.1065), "tp", "1.10600"),
    (BUY, "1.09800", "1.10400", (1.1060, 1.1070, 1.0900, 1.0950), "tp", "1.10600"),  # then falls through the SL too
    (SELL, "1.10200", "1.09600", (1.1050, 1.1060, 1.1040, 1.1055), "sl", "1.10510"),
    (SELL, "1.10200", "1.09600", (1.0930, 1.0940, 1.0920, 1.0935), "tp", "1.09310"),
    (BUY, "1.09800", "1.10400", (1.1000, 1.1000, 1.0950, 1.0960), "sl", "1.09800"),  # crossed inside the bar
    (SELL, "1.10200", "1.09600", (1.1000, 1.1050, 1.1000, 1.1040), "sl", "1.10200"),
]


@pytest.mark.parametrize("side, sl, tp, bar, reason, price", GAPS)
def test_a_replayed_level_gapped_through_fills_at_the_open_and_one_crossed_inside_a_bar_at_the_level(
    side, sl, tp, bar, reason, price
):
    clock, broker = replay_with(bar)
    position, closed = closed_after_the_bar(clock, broker, side, sl, tp)
    assert (closed.reason, closed.close_price) == (reason, D(price))
    sign = 1 if side == BUY else -1
    assert closed.profit == (sign * (D(price) - position.open_price) * 100000).quantize(D("0.01"))
    assert result(broker.balance()) == D("10000") + closed.profit


class _TickWalk(walks._SymbolWalk):
    """A bid that takes the given ticks, one a second from ORIGIN, then
    stays on the last."""

    def __init__(self, spec, rng, ticks):
        self.ticks = np.array(ticks)
        super().__init__(spec, rng, float(ticks[0]), 0.0)

    def step(self, first_second, count):
        seconds = np.arange(first_second, first_second + count, dtype=np.int64)
        bids = self.ticks[np.clip(seconds - int(ORIGIN), 0, len(self.ticks) - 1)]
        self.price = self.bid = float(bids[-1])
        self._add_to_bars(seconds, bids)
        return seconds, bids


def ticking(ticks):
    """A paper account on a market whose EURUSD bid takes `ticks`."""

    class TickMarket(PaperMarket):
        def _walk(self, name, spec, rng):
            if name == "EURUSD":
                return _TickWalk(spec, rng, ticks)
            return super()._walk(name, spec, rng)

    clock = Clock()
    backend = PaperBackend(reactor=clock, market=TickMarket(clock, origin=ORIGIN))
    result(backend.start())
    return clock, backend.broker_for("1", Decimal("10000"))


@pytest.mark.parametrize(
    "side, sl, tp, ticks, reason, price",
    [
        (BUY, "1.09800", "1.10400", [1.1, 1.0995, 1.0987, 1.0979, 1.097], "sl", "1.09790"),
        (BUY, "1.09800", "1.10400", [1.1, 1.1030, 1.1043, 1.1050], "tp", "1.10430"),
        (SELL, "1.10200", "1.09600", [1.1, 1.1015, 1.1022, 1.1030], "sl", "1.10230"),  # the ask: bid + 10 points
        (SELL, "1.10200", "1.09600", [1.1, 1.0970, 1.0948, 1.0940], "tp", "1.09490"),
    ],
)
def test_each_second_is_a_tick_and_a_level_fills_at_the_first_tick_past_it(side, sl, tp, ticks, reason, price):
    clock, broker = ticking(ticks)
    position = result(broker.open_position(OrderRequest("EURUSD", side, Decimal("1.00"), D(sl), D(tp), "tb-t")))
    clock.advance(len(ticks))
    closed = result(broker.closed_position(position.ticket))
    assert (closed.reason, closed.close_price) == (reason, D(price))
    assert closed.closed_at == ORIGIN + next(
        i for i, bid in enumerate(ticks) if D(str(bid)) + (0 if side == BUY else D("0.0001")) == D(price)
    )

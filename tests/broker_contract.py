"""
The behaviour every broker owes the sessions, as one suite each broker runs.

A broker's test module subclasses `BrokerContract` and provides a `harness`
fixture: an object with

- ``broker``: a `tradebot.broker.Broker` for an account holding 10,000;
- ``backend``: the backend it came from, for another account's broker;
- ``symbols``: two symbols it offers, a forex pair and gold;
- ``pass_time(seconds)``: lets the market move on (a Clock for the paper
  broker, a scripted fake terminal for MT5).

Every call returns a Deferred; the harness's brokers answer synchronously, so
the tests read ``.result``.
"""

from decimal import Decimal

import pytest
from twisted.python.failure import Failure

from tradebot.broker import (
    BUY,
    SELL,
    Candles,
    ClosedPosition,
    OrderRefused,
    OrderRequest,
    Position,
    SymbolSpec,
    Tick,
    UnknownSymbol,
)


def result(d):
    """The result of a Deferred that has fired, raising its failure."""
    assert d.called, "the broker did not answer at once"
    value = d.result
    if isinstance(value, Failure):
        d.addErrback(lambda _: None)
        value.raiseException()
    return value


def fails_with(d, error_type):
    """The exception a fired Deferred failed with, checked against `error_type`."""
    assert d.called
    failure = d.result
    assert isinstance(failure, Failure), f"expected {error_type.__name__}, got {failure!r}"
    d.addErrback(lambda _: None)
    assert failure.check(error_type), failure
    return failure.value


def stops_around(spec: SymbolSpec, tick: Tick, side: str, stop_points: int, take_points: int):
    """SL and TP `stop_points` / `take_points` beyond the price a position of
    `side` would close at."""
    direction = 1 if side == BUY else -1
    reference = tick.bid if side == BUY else tick.ask
    return (
        spec.round_price(reference - direction * stop_points * spec.point),
        spec.round_price(reference + direction * take_points * spec.point),
    )


def wide_order(harness, symbol, side=BUY, volume="0.10", comment="tb-1", stop=None, take=None):
    """An order with stops far enough from the market to be valid."""
    spec = result(harness.broker.symbol(symbol))
    tick = result(harness.broker.tick(symbol))
    margin = 10 * (spec.stops_level + spec.spread)
    sl, tp = stops_around(spec, tick, side, stop or margin, take or margin)
    return OrderRequest(symbol, side, Decimal(volume), sl, tp, comment)


def run_until_closed(harness, ticket, step=1, limit=100000):
    """Let the market move, `step` seconds at a time, until the position
    closes; its ClosedPosition."""
    for _ in range(limit):
        if result(harness.broker.position(ticket)) is None:
            return result(harness.broker.closed_position(ticket))
        harness.pass_time(step)
    raise AssertionError(f"position {ticket} did not close")


class BrokerContract:
    """The contract: subclass it and provide the `harness` fixture."""

    def test_balance_is_money(self, harness):
        balance = result(harness.broker.balance())
        assert isinstance(balance, Decimal) and balance == Decimal("10000")

    def test_equity_is_the_balance_with_every_open_positions_floating_profit(self, harness):
        assert result(harness.broker.equity()) == Decimal("10000")
        first = result(harness.broker.open_position(wide_order(harness, harness.symbols[0], comment="tb-e1")))
        second = result(harness.broker.open_position(wide_order(harness, harness.symbols[1], SELL, comment="tb-e2")))
        floating = sum(result(harness.broker.position(p.ticket)).profit for p in (first, second))
        balance = result(harness.broker.balance())
        assert result(harness.broker.equity()) == balance + floating

    def test_symbols_have_real_specifications(self, harness):
        for name in harness.symbols:
            spec = result(harness.broker.symbol(name))
            assert spec.name == name
            assert spec.digits >= 1 and spec.point == Decimal(1).scaleb(-spec.digits)
            assert 0 < spec.volume_min <= spec.volume_max and spec.volume_step > 0
            assert spec.contract_size > 0

    def test_an_unknown_symbol_fails(self, harness):
        fails_with(harness.broker.symbol("NOPE"), UnknownSymbol)

    def test_a_tick_has_bid_below_ask_at_the_symbol_digits(self, harness):
        for name in harness.symbols:
            spec = result(harness.broker.symbol(name))
            tick = result(harness.broker.tick(name))
            assert tick.symbol == name and tick.bid < tick.ask
            assert spec.round_price(tick.bid) == tick.bid and spec.round_price(tick.ask) == tick.ask

    def test_candles_are_completed_bars_oldest_first(self, harness):
        name = harness.symbols[0]
        candles = result(harness.broker.candles(name, 50))
        assert isinstance(candles, Candles) and len(candles) == 50
        assert (candles.time[1:] > candles.time[:-1]).all()
        assert (candles.high >= candles.low).all()
        assert (candles.high >= candles.open).all() and (candles.high >= candles.close).all()
        assert (candles.low <= candles.open).all() and (candles.low <= candles.close).all()

    def test_calc_profit_is_signed_by_side(self, harness):
        name = harness.symbols[0]
        up = result(harness.broker.calc_profit(BUY, name, Decimal("1"), Decimal("1.10000"), Decimal("1.10100")))
        down = result(harness.broker.calc_profit(SELL, name, Decimal("1"), Decimal("1.10000"), Decimal("1.10100")))
        assert up > 0 and down == -up

    def test_an_order_opens_a_position_carrying_its_comment(self, harness):
        request = wide_order(harness, harness.symbols[1], comment="tb-42")
        position = result(harness.broker.open_position(request))
        assert isinstance(position, Position)
        assert (position.symbol, position.side, position.volume) == (request.symbol, BUY, request.volume)
        assert (position.stop_loss, position.take_profit) == (request.stop_loss, request.take_profit)
        assert position.comment == "tb-42"
        assert result(harness.broker.position(position.ticket)).ticket == position.ticket
        assert result(harness.broker.closed_position(position.ticket)) is None
        assert result(harness.broker.find_by_comment("tb-42")).ticket == position.ticket
        assert result(harness.broker.find_by_comment("tb-43")) is None

    def test_a_buy_fills_at_the_ask_and_a_sell_at_the_bid(self, harness):
        name = harness.symbols[0]
        tick = result(harness.broker.tick(name))
        buy = result(harness.broker.open_position(wide_order(harness, name, BUY, comment="tb-1")))
        sell = result(harness.broker.open_position(wide_order(harness, name, SELL, comment="tb-2")))
        assert buy.open_price == tick.ask and sell.open_price == tick.bid

    @pytest.mark.parametrize("volume", ["0.001", "0.015", "100000"])
    def test_a_bad_volume_is_refused_and_changes_nothing(self, harness, volume):
        request = wide_order(harness, harness.symbols[0], volume=volume)
        refused = fails_with(harness.broker.open_position(request), OrderRefused)
        assert refused.reason and refused.code is not None
        assert result(harness.broker.find_by_comment(request.comment)) is None
        assert result(harness.broker.balance()) == Decimal("10000")

    def test_stops_on_the_wrong_side_are_refused(self, harness):
        name = harness.symbols[0]
        good = wide_order(harness, name, BUY)
        swapped = OrderRequest(name, BUY, good.volume, good.take_profit, good.stop_loss, "tb-9")
        refused = fails_with(harness.broker.open_position(swapped), OrderRefused)
        assert "stops" in refused.reason
        assert result(harness.broker.find_by_comment("tb-9")) is None

    def test_open_positions_lists_this_accounts_positions(self, harness):
        assert result(harness.broker.open_positions()) == []
        first = result(harness.broker.open_position(wide_order(harness, harness.symbols[0], comment="tb-1")))
        second = result(harness.broker.open_position(wide_order(harness, harness.symbols[1], SELL, comment="tb-2")))
        listed = result(harness.broker.open_positions())
        assert [(p.ticket, p.comment, p.side) for p in listed] == [
            (first.ticket, "tb-1", BUY),
            (second.ticket, "tb-2", SELL),
        ]
        other = harness.backend.broker_for("2", Decimal("10000"))
        assert result(other.open_positions()) == []

    def test_a_closed_position_has_its_realised_result(self, harness):
        name = harness.symbols[1]
        position = result(harness.broker.open_position(wide_order(harness, name, comment="tb-7")))
        closed = run_until_closed(harness, position.ticket)
        assert isinstance(closed, ClosedPosition)
        assert closed.ticket == position.ticket and closed.comment == "tb-7"
        assert closed.reason in ("sl", "tp")
        # a BUY closes at the bid: at its stop loss or below, its take profit or above
        if closed.reason == "sl":
            assert closed.close_price <= position.stop_loss
        else:
            assert closed.close_price >= position.take_profit
        expected = result(
            harness.broker.calc_profit(BUY, name, position.volume, position.open_price, closed.close_price)
        )
        assert closed.profit == expected.quantize(Decimal("0.01"))
        assert result(harness.broker.balance()) == Decimal("10000") + closed.profit
        assert result(harness.broker.find_by_comment("tb-7")) == closed

    def test_closing_a_position_closes_it_at_the_market_by_the_expert(self, harness):
        for side in (BUY, SELL):
            name = harness.symbols[0]
            comment = f"tb-c{side[0]}"
            position = result(harness.broker.open_position(wide_order(harness, name, side, comment=comment)))
            balance = result(harness.broker.balance())
            tick = result(harness.broker.tick(name))
            closed = result(harness.broker.close_position(position.ticket))
            assert isinstance(closed, ClosedPosition)
            assert (closed.ticket, closed.side, closed.volume) == (position.ticket, side, position.volume)
            assert closed.reason == "expert" and closed.comment == comment
            assert closed.close_price == (tick.bid if side == BUY else tick.ask)
            expected = result(
                harness.broker.calc_profit(side, name, position.volume, position.open_price, closed.close_price)
            )
            assert closed.profit == expected.quantize(Decimal("0.01"))
            assert result(harness.broker.position(position.ticket)) is None
            assert result(harness.broker.closed_position(position.ticket)) == closed
            assert result(harness.broker.open_positions()) == []
            assert result(harness.broker.balance()) == balance + closed.profit

    def test_closing_a_position_that_is_not_open_is_refused(self, harness):
        position = result(harness.broker.open_position(wide_order(harness, harness.symbols[0], comment="tb-5")))
        closed = result(harness.broker.close_position(position.ticket))
        balance = result(harness.broker.balance())
        refused = fails_with(harness.broker.close_position(position.ticket), OrderRefused)
        assert refused.reason and refused.code is not None
        assert result(harness.broker.closed_position(position.ticket)) == closed
        assert result(harness.broker.balance()) == balance

"""
A scripted market for the session unit tests: a `Broker` whose prices the test
sets, and a strategy that gives the signals the test queues.

The broker keeps the paper broker's semantics (fills at ask/bid, SL/TP closes
at the level crossed, profit = price difference x contract size x volume) on
a market the test moves by hand, so a test can say exactly when a trade opens
and closes.
"""

from decimal import Decimal

import attrs
import numpy as np
from twisted.internet import defer

from tradebot.broker import (
    BUY,
    Broker,
    BrokerUnavailable,
    Candles,
    ClosedPosition,
    OrderRefused,
    Position,
    SymbolSpec,
    Tick,
    UnknownSymbol,
    to_cents,
)

SPECS = {
    "EURUSD": SymbolSpec("EURUSD", 5, Decimal(100000), Decimal("0.01"), Decimal(100), Decimal("0.01"), 10, 10),
    "XAUUSD": SymbolSpec("XAUUSD", 2, Decimal(100), Decimal("0.01"), Decimal(100), Decimal("0.01"), 20, 20),
}


class ScriptedBroker(Broker):
    """One account on a market moved by the test with `set_bid`."""

    def __init__(self, clock, balance=Decimal("10000")):
        self._clock = clock
        self._balance = Decimal(balance)
        self.bids = {"EURUSD": Decimal("1.08500"), "XAUUSD": Decimal("2330.00")}
        self.positions = {}
        self.closed = {}
        self.orders = []  # every OrderRequest received
        self.refuse_next = None  # an OrderRefused to raise on the next order
        self.lose_next_answer = False  # fill the next order but fail the call
        self.closes = []  # the ticket of every close asked for
        self.lose_next_close = False  # close the next position but fail the call
        self.refuse_closes = False  # refuse every close, closing nothing
        self.candle_calls = 0
        self.foreign_floating = Decimal(0)  # positions opened by a person or another program
        self._next_ticket = 1000

    def _ask(self, symbol):
        spec = SPECS[symbol]
        return self.bids[symbol] + spec.spread * spec.point

    def _spec(self, symbol):
        if symbol not in SPECS:
            raise UnknownSymbol(symbol)
        return SPECS[symbol]

    def _profit(self, side, symbol, volume, price_open, price_close):
        difference = price_close - price_open if side == BUY else price_open - price_close
        return difference * SPECS[symbol].contract_size * volume

    def set_bid(self, symbol, bid):
        """Move the market; positions whose SL or TP the new price reaches close
        at that level."""
        self.bids[symbol] = Decimal(bid)
        for ticket, p in list(self.positions.items()):
            if p.symbol != symbol:
                continue
            price = self.bids[symbol] if p.side == BUY else self._ask(symbol)
            sign = 1 if p.side == BUY else -1
            if sign * (price - p.stop_loss) <= 0:
                self._close(p, p.stop_loss, "sl")
            elif sign * (price - p.take_profit) >= 0:
                self._close(p, p.take_profit, "tp")

    def _close(self, p, price, reason):
        del self.positions[p.ticket]
        profit = to_cents(self._profit(p.side, p.symbol, p.volume, p.open_price, price))
        self._balance += profit
        self.closed[p.ticket] = ClosedPosition(
            ticket=p.ticket,
            symbol=p.symbol,
            side=p.side,
            volume=p.volume,
            open_price=p.open_price,
            close_price=price,
            profit=profit,
            opened_at=p.opened_at,
            closed_at=self._clock.seconds(),
            reason=reason,
            comment=p.comment,
        )

    def balance(self):
        return defer.succeed(self._balance)

    def equity(self):
        """The balance, the floating profit of every position and `foreign_floating`
        (positions on the account that are not this program's)."""
        floating = sum((self.position(t).result.profit for t in self.positions), Decimal(0))
        return defer.succeed(self._balance + floating + self.foreign_floating)

    def symbol(self, name):
        return defer.execute(self._spec, name)

    def tick(self, name):
        return defer.succeed(Tick(name, self._clock.seconds(), self.bids[name], self._ask(name)))

    def candles(self, name, count):
        self.candle_calls += 1
        close = np.full(count, float(self.bids[name]))
        return defer.succeed(Candles(name, np.arange(count, dtype=float), close, close, close, close))

    def calc_profit(self, side, name, volume, price_open, price_close):
        return defer.succeed(self._profit(side, name, Decimal(volume), price_open, price_close))

    def open_position(self, request):
        self.orders.append(request)
        if self.refuse_next is not None:
            error, self.refuse_next = self.refuse_next, None
            return defer.fail(error)
        self._next_ticket += 1
        price = self._ask(request.symbol) if request.side == BUY else self.bids[request.symbol]
        position = Position(
            ticket=self._next_ticket,
            symbol=request.symbol,
            side=request.side,
            volume=request.volume,
            open_price=price,
            stop_loss=request.stop_loss,
            take_profit=request.take_profit,
            current_price=price,
            profit=Decimal(0),
            opened_at=self._clock.seconds(),
            comment=request.comment,
        )
        self.positions[position.ticket] = position
        if self.lose_next_answer:
            self.lose_next_answer = False
            return defer.fail(ConnectionError("the answer to the order was lost"))
        return defer.succeed(position)

    def close_position(self, ticket):
        self.closes.append(ticket)
        p = self.positions.get(ticket)
        if p is None:
            return defer.fail(OrderRefused("position already closed", 10036))
        if self.refuse_closes:
            return defer.fail(OrderRefused("market closed", 10018))
        self._close(p, self.bids[p.symbol] if p.side == BUY else self._ask(p.symbol), "expert")
        if self.lose_next_close:
            self.lose_next_close = False
            return defer.fail(BrokerUnavailable("the answer to the close was lost"))
        return defer.succeed(self.closed[ticket])

    def position(self, ticket):
        p = self.positions.get(ticket)
        if p is None:
            return defer.succeed(None)
        price = self.bids[p.symbol] if p.side == BUY else self._ask(p.symbol)
        profit = to_cents(self._profit(p.side, p.symbol, p.volume, p.open_price, price))
        return defer.succeed(attrs.evolve(p, current_price=price, profit=profit))

    def closed_position(self, ticket):
        return defer.succeed(self.closed.get(ticket))

    def open_positions(self):
        return defer.gatherResults([self.position(ticket) for ticket in self.positions])

    def find_by_comment(self, comment, since=None):
        for p in list(self.positions.values()) + list(self.closed.values()):
            if p.comment == comment:
                return defer.succeed(p)
        return defer.succeed(None)


class ScriptedStrategy:
    """Gives the signals queued with `queue(symbol, signal)`, one per check."""

    name = "scripted"
    candles_needed = 5

    def __init__(self):
        self._queued = {}
        self.evaluations = 0

    def queue(self, symbol, signal):
        self._queued.setdefault(symbol, []).append(signal)

    def evaluate(self, candles, spec):
        self.evaluations += 1
        pending = self._queued.get(candles.symbol)
        return pending.pop(0) if pending else None


class FailingOnce:
    """Wraps a callable so that its first call raises."""

    def __init__(self, fn, error):
        self._fn = fn
        self._error = error

    def __call__(self, *args, **kwargs):
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._fn(*args, **kwargs)

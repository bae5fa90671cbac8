"""
One paper trading account on the shared market: its balance, open and closed
positions, and the broker interface over them, each answer given once the
state holding it is saved.
"""

import collections
from decimal import Decimal
from typing import Dict

from twisted.internet import defer

from tradebot.broker import Broker, BrokerUnavailable, ClosedPosition, OrderRefused, OrderRequest, Tick, to_cents
from tradebot.brokers.paper.catalog import CATALOG, MAX_CLOSED
from tradebot.brokers.paper.market import PaperMarket, _closed_from_dict, _closed_to_dict, _OpenPosition


class PaperBroker(Broker):
    """One paper trading account on the shared market."""

    def __init__(self, market: PaperMarket, key: str, balance: Decimal, on_change, durable=None):
        self.market = market
        self.key = key
        self._balance = to_cents(balance)
        self.positions: Dict[int, _OpenPosition] = {}
        self.closed: "collections.OrderedDict[int, ClosedPosition]" = collections.OrderedDict()
        self._on_change = on_change  # a position opened: Deferred, fired once saved
        self._durable = durable or (lambda: defer.succeed(None))  # fired once every change is saved
        #: True while this account has changes its backend has not yet saved.
        self.changed = True

    def free_margin(self) -> Decimal:
        """Balance less the margin of the open positions."""
        used = sum(
            (self.market._margin(CATALOG[p.symbol], p.volume, p.open_price) for p in self.positions.values()),
            Decimal(0),
        )
        return self._balance - used

    def record_close(self, closed: ClosedPosition) -> None:
        """A position of this account closed: realise its profit."""
        self.positions.pop(closed.ticket, None)
        self._balance = to_cents(self._balance + closed.profit)
        self.closed[closed.ticket] = closed
        self.changed = True
        while len(self.closed) > MAX_CLOSED:
            self.closed.popitem(last=False)

    # -- the Broker interface ---------------------------------------------------

    def balance(self):
        """Deferred[Decimal]: the balance after every close up to now, once saved."""
        return self._told(lambda: self._balance)

    def equity(self):
        """Deferred[Decimal]: the balance with the floating profit of every
        open position, once saved."""

        def _equity():
            floating = sum((self.market.current(p).profit for p in self.positions.values()), Decimal(0))
            return to_cents(self._balance + floating)

        return self._told(_equity)

    def symbol(self, name):
        """Deferred[SymbolSpec]; fails with `UnknownSymbol`."""
        return defer.execute(self.market.spec, name)

    def tick(self, name):
        """Deferred[Tick]: the bid and ask now."""

        def _tick():
            self.market.advance()
            bid, ask = self.market.quote(name)
            return Tick(symbol=name, time=self.market.now(), bid=bid, ask=ask)

        return defer.execute(_tick)

    def candles(self, name, count):
        """Deferred[Candles]: the latest `count` completed M1 bars."""

        def _candles():
            self.market.spec(name)
            self.market.advance()
            return self.market.walks[name].candles(count)

        return defer.execute(_candles)

    def calc_profit(self, side, name, volume, price_open, price_close):
        """Deferred[Decimal]: the profit of a hypothetical position, unrounded."""
        return defer.execute(self.market.profit, side, name, volume, price_open, price_close)

    def open_position(self, request: OrderRequest):
        """Deferred[Position]: the filled position, once the new state is saved;
        fails with `OrderRefused`."""
        try:
            self.market.advance()
            position = self.market.open(self, request)
        except OrderRefused:
            return defer.fail()
        filled = self.market.current(position)
        d = self._on_change()
        d.addCallback(lambda _: filled)
        return d

    def close_position(self, ticket):
        """Deferred[ClosedPosition]: the position closed at the market now,
        once the new state is saved; fails with `OrderRefused` if it is not
        open (a stop may have closed it first)."""
        try:
            self.market.advance()
            closed = self.market.close(self, ticket)
        except OrderRefused:
            return defer.fail()
        d = self._on_change()
        d.addCallback(lambda _: closed)
        return d

    def position(self, ticket):
        """Deferred[Optional[Position]]: the open position, or None once
        closed (and the close saved)."""

        def _position():
            position = self.positions.get(ticket)
            return None if position is None else self.market.current(position)

        return self._told(_position)

    def closed_position(self, ticket):
        """Deferred[Optional[ClosedPosition]]: the result, once saved; None while open."""
        return self._told(lambda: self.closed.get(ticket))

    def find_by_comment(self, comment, since=None):
        """Deferred: the open or closed position whose order carried `comment`
        (the paper market's state lives with the trades: no older namesake)."""

        def _find():
            for position in self.positions.values():
                if position.comment == comment:
                    return self.market.current(position)
            for closed in reversed(self.closed.values()):
                if closed.comment == comment:
                    return closed
            return None

        return self._told(_find)

    def open_positions(self):
        """Deferred[list of Position]: this account's open positions, oldest first."""
        return self._told(lambda: [self.market.current(p) for p in self.positions.values()])

    def _now(self, fn):
        self.market.advance()
        return fn()

    def _told(self, fn):
        """Deferred: ``fn()`` on the market as it is now, given only once every
        change up to now (a close it may reveal) is saved; `BrokerUnavailable`
        if saving failed."""
        try:
            value = self._now(fn)
        except Exception:
            return defer.fail()

        def _not_saved(failure):
            raise BrokerUnavailable(f"the paper broker's state could not be saved: {failure.getErrorMessage()}")

        return self._durable().addCallbacks(lambda _: value, _not_saved)

    # -- state ------------------------------------------------------------------

    def save(self) -> dict:
        """This account as a JSON-able document."""
        return {
            "balance": str(self._balance),
            "positions": [p.to_dict() for p in self.positions.values()],
            "closed": [_closed_to_dict(c) for c in self.closed.values()],
        }

    def load(self, document: dict) -> None:
        """Restore a saved account, re-opening its positions on the market."""
        self._balance = Decimal(document["balance"])
        for saved in document["positions"]:
            position = _OpenPosition(
                ticket=saved["ticket"],
                account=self,
                symbol=saved["symbol"],
                side=saved["side"],
                volume=Decimal(saved["volume"]),
                open_price=Decimal(saved["open_price"]),
                stop_loss=Decimal(saved["stop_loss"]),
                take_profit=Decimal(saved["take_profit"]),
                opened_at=saved["opened_at"],
                comment=saved["comment"],
            )
            self.positions[position.ticket] = position
            self.market.adopt(position)
        for saved in document["closed"]:
            closed = _closed_from_dict(saved)
            self.closed[closed.ticket] = closed

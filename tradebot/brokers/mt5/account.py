"""
`MT5Broker`: one trading account on a terminal (its magic number), the
broker interface over the terminal's `MT5Backend`.
"""


from twisted.internet import defer

from tradebot.broker import Broker, OrderRequest


class MT5Broker(Broker):
    """One tradebot account's view of the terminal's trading account: its
    orders and positions are the ones carrying its magic number."""

    def __init__(self, backend, magic: int):
        self.backend = backend
        self.magic = magic

    @property
    def available(self) -> bool:
        """True while orders can be sent (terminal and broker link up)."""
        return self.backend.available

    @property
    def settled(self) -> bool:
        """False while the first connection to the terminal is under way."""
        return self.backend.settled

    @property
    def unavailable_reason(self) -> str:
        """Why orders cannot be sent now, while `available` is False."""
        return self.backend.down_reason

    def watch(self, callback) -> None:
        """Hear of the terminal's availability changes."""
        self.backend.watch(callback)

    def unwatch(self, callback) -> None:
        """Stop hearing of them."""
        self.backend.unwatch(callback)

    def balance(self):
        """Deferred[Decimal]: the terminal account's balance, to cents."""
        return defer.ensureDeferred(self.backend.balance())

    def equity(self):
        """Deferred[Decimal]: the terminal account's equity (``account_info``),
        every position on the account counted, to cents."""
        return defer.ensureDeferred(self.backend.equity())

    def symbol(self, name):
        """Deferred[SymbolSpec] of a symbol, selected in Market Watch."""
        return defer.ensureDeferred(self.backend.spec(name))

    def tick(self, name):
        """Deferred[Tick]: the latest quote, its time in UTC."""
        return defer.ensureDeferred(self.backend.tick(name))

    def candles(self, name, count):
        """Deferred[Candles]: the last `count` completed M1 bars."""
        return defer.ensureDeferred(self.backend.candles(name, count))

    def calc_profit(self, side, name, volume, price_open, price_close):
        """Deferred[Decimal] from ``order_calc_profit``."""
        return defer.ensureDeferred(self.backend.calc_profit(side, name, volume, price_open, price_close))

    def open_position(self, request: OrderRequest):
        """Deferred[Position]; `OrderRefused` when the broker says no,
        `OutcomeUnknown` when its answer was lost and the order not found."""
        return defer.ensureDeferred(self.backend.open_position(request, self.magic))

    def close_position(self, ticket):
        """Deferred[ClosedPosition] of the position closed at the market;
        `OrderRefused` when the broker says no, `OutcomeUnknown` when its
        answer was lost or the close is not in the history yet."""
        return defer.ensureDeferred(self.backend.close_position(ticket, self.magic))

    def position(self, ticket):
        """Deferred[Optional[Position]] by position identifier."""
        return defer.ensureDeferred(self.backend.position(ticket, self.magic))

    def closed_position(self, ticket):
        """Deferred[Optional[ClosedPosition]]: None while open, or while its
        exit deal has not reached the history yet."""
        return defer.ensureDeferred(self.backend.closed_position(ticket, self.magic))

    def find_by_comment(self, comment, since=None):
        """Deferred[Position | ClosedPosition | None] of this account's order
        with `comment` placed since `since`, from positions, orders in flight,
        then order history."""
        return defer.ensureDeferred(self.backend.find_by_comment(comment, self.magic, since))

    def open_positions(self):
        """Deferred[list of Position]: the positions carrying this magic."""
        return defer.ensureDeferred(self.backend.open_positions(self.magic))

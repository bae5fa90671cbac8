"""
The broker interface every broker implements, and its value types. The factory
that turns a broker URL into a broker backend is `tradebot.brokers.registry`:
this interface imports no broker.

A *backend* is what one broker URL names: one simulated market, one MetaTrader 5
terminal. It is shared by every account that trades through it, and hands out
one `Broker` per trading account with `broker_for`. Every `Broker` method returns a
Deferred; an implementation that blocks runs its work off the reactor thread.

Prices and money are `Decimal` in every value type: prices rounded to the symbol's
digits, money to cents. Candles are numpy arrays of floats, for the indicators.
"""

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Optional, Union
from urllib.parse import parse_qs, urlsplit

import attrs
import numpy as np

BUY = "BUY"
SELL = "SELL"
SIDES = (BUY, SELL)

CENT = Decimal("0.01")

#: Why a position closed, as recorded and reported.
CLOSE_REASONS = ("tp", "sl", "stop_out", "manual", "expert", "other")


def to_cents(amount) -> Decimal:
    """Return `amount` as a Decimal rounded half-even to cents."""
    return Decimal(str(amount)).quantize(CENT, rounding=ROUND_HALF_EVEN)


class BrokerError(Exception):
    """Base class of the errors a broker reports."""


class OrderRefused(BrokerError):
    """The broker refused an order; nothing was opened.

    `reason` is a readable sentence for the client; `code` the broker's own code
    (an MT5 retcode, or a short word for the paper broker).
    """

    def __init__(self, reason: str, code: Union[int, str, None] = None):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class UnknownSymbol(BrokerError):
    """The broker does not offer this symbol."""


class BrokerUnavailable(BrokerError):
    """The broker did not answer, or answered that it cannot work now."""


@attrs.frozen
class SymbolSpec:
    """The trading specification of one symbol, as MT5's SymbolInfo gives it."""

    name: str
    digits: int
    contract_size: Decimal
    volume_min: Decimal
    volume_max: Decimal
    volume_step: Decimal
    stops_level: int = 0
    spread: int = 0
    profit_currency: str = "USD"
    description: str = ""

    @property
    def point(self) -> Decimal:
        """The smallest price change, 10 ** -digits."""
        return Decimal(1).scaleb(-self.digits)

    def round_price(self, price) -> Decimal:
        """Return `price` rounded half-even to this symbol's digits."""
        return Decimal(str(price)).quantize(self.point, rounding=ROUND_HALF_EVEN)

    def round_volume(self, volume) -> Decimal:
        """Return `volume` rounded down to a whole number of volume steps and
        clamped to [volume_min, volume_max]."""
        volume = Decimal(str(volume))
        steps = (volume / self.volume_step).to_integral_value(rounding=ROUND_DOWN)
        rounded = steps * self.volume_step
        rounded = min(max(rounded, self.volume_min), self.volume_max)
        return rounded.quantize(self.volume_step)


@attrs.frozen
class Tick:
    """The latest quote of a symbol: `time` in epoch seconds (the market's clock)."""

    symbol: str
    time: float
    bid: Decimal
    ask: Decimal


@attrs.frozen(eq=False)
class Candles:
    """Completed M1 bars of a symbol, oldest first, as float64 numpy arrays of
    equal length. The bar still forming is never included."""

    symbol: str
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def __len__(self) -> int:
        return len(self.close)


@attrs.frozen
class OrderRequest:
    """A market order with its stops. `comment` is at most 16 characters of
    ``[A-Za-z0-9 _-]`` (terminals keep no more on deals) and is how a
    restart finds the order again."""

    symbol: str
    side: str = attrs.field(validator=attrs.validators.in_(SIDES))
    volume: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    comment: str = attrs.field(
        validator=attrs.validators.matches_re(r"[A-Za-z0-9 _-]{1,16}")
    )
    magic: int = 0


@attrs.frozen
class Position:
    """An open position. `current_price` is the price it would close at now (bid
    for a BUY, ask for a SELL); `profit` the floating profit in account money."""

    ticket: int
    symbol: str
    side: str
    volume: Decimal
    open_price: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    current_price: Decimal
    profit: Decimal
    opened_at: float
    comment: str = ""


@attrs.frozen
class ClosedPosition:
    """A position that has closed, with its realised result in account money
    (profit, commission, swap and fees together, rounded to cents)."""

    ticket: int
    symbol: str
    side: str
    volume: Decimal
    open_price: Decimal
    close_price: Decimal
    profit: Decimal
    opened_at: float
    closed_at: float
    reason: str = attrs.field(validator=attrs.validators.in_(CLOSE_REASONS))
    comment: str = ""


class Broker:
    """One trading account at a broker. Every method returns a Deferred.

    Implementations: `tradebot.brokers.paper.PaperBroker`, `tradebot.brokers.mt5.backend.MT5Broker`.
    `available` is False while the broker cannot take orders. A new broker passes the
    contract suite in ``tests/broker_contract.py``.
    """

    available = True
    #: False while the broker is still connecting for the first time.
    settled = True

    def watch(self, callback) -> None:
        """Call ``callback(available: bool, reason: str)`` each time
        `available` changes. A broker that never goes away never calls it."""

    def unwatch(self, callback) -> None:
        """Stop calling `callback`."""

    def balance(self):
        """Deferred[Decimal]: the account balance in account money."""
        raise NotImplementedError

    def equity(self):
        """Deferred[Decimal]: the account's equity in account money: its
        balance with the floating result of every position open on the
        account, this program's or not (a prop firm counts them all), to cents."""
        raise NotImplementedError

    def symbol(self, name: str):
        """Deferred[SymbolSpec]; fails with `UnknownSymbol`."""
        raise NotImplementedError

    def tick(self, name: str):
        """Deferred[Tick]: the latest quote."""
        raise NotImplementedError

    def candles(self, name: str, count: int):
        """Deferred[Candles]: up to `count` most recent completed M1 bars."""
        raise NotImplementedError

    def calc_profit(self, side: str, name: str, volume, price_open, price_close):
        """Deferred[Decimal]: what a position of `volume` lots would make (or
        lose, negative) from `price_open` to `price_close`, in account money,
        unrounded (as MT5's order_calc_profit)."""
        raise NotImplementedError

    def open_position(self, request: OrderRequest):
        """Deferred[Position]: place a market order; fails with `OrderRefused`."""
        raise NotImplementedError

    def close_position(self, ticket: int):
        """Deferred[ClosedPosition]: close the whole open position at the
        market, reason ``expert`` (a close by the program). Fails with
        `OrderRefused` (nothing closed: no such open position, market closed)
        or `BrokerUnavailable` (outcome unknown: `closed_position` finds a
        close that happened)."""
        raise NotImplementedError

    def position(self, ticket: int):
        """Deferred[Optional[Position]]: the open position, or None once it has
        closed."""
        raise NotImplementedError

    def closed_position(self, ticket: int):
        """Deferred[Optional[ClosedPosition]]: the result of a closed position,
        or None while it is still open."""
        raise NotImplementedError

    def find_by_comment(self, comment: str, since: Optional[float] = None):
        """Deferred[Position | ClosedPosition | None]: the position an order with
        this comment opened, open or closed, or None if no such order was
        filled. `since` (UTC epoch) is when the trade was recorded: an older
        order with the same comment is another trade's. Used to reconcile
        after a restart or an unknown outcome."""
        raise NotImplementedError

    def open_positions(self):
        """Deferred[list of Position]: every open position of this account,
        so that a restart adopts one the store does not know."""
        raise NotImplementedError


class BrokerBackend:
    """What one broker URL names, shared by all accounts trading through it."""

    #: The URL it was made from, with any secret removed. It may name a
    #: customer's login, broker server or terminal path: never log or show it.
    url: str = ""
    #: What logs, /health and /metrics call it: opaque and stable, never the
    #: login, server, path or address its URL gives (`tradebot.store.serverkeys`).
    name: str = "broker"

    def description(self) -> str:
        """How the server's start-up line shows it: its name, unless (like
        the paper broker's) its URL holds nothing private."""
        return self.name

    def start(self):
        """Deferred: ready to trade."""
        raise NotImplementedError

    def stop(self):
        """Deferred: state saved and connections closed."""
        raise NotImplementedError

    def use_password(self, password: str) -> bool:
        """Log in with `password` (an account's stored broker password, decrypted)
        from now on; False, changing nothing, if another was given before. A
        backend that logs in to nothing ignores it."""
        return True

    def broker_for(self, account_key: str, initial_balance: Decimal) -> Broker:
        """The `Broker` for one trading account. `initial_balance` seeds a
        simulated account; a real broker ignores it."""
        raise NotImplementedError

    def known_symbols(self) -> Optional[frozenset]:
        """The symbol names this backend offers, when known without asking a
        remote server; None otherwise."""
        return None


@attrs.frozen
class BrokerURL:
    """A parsed broker URL: ``paper``, ``paper://?seed=7&speed=600``,
    ``mt5://?path=...``. Query values are single strings."""

    scheme: str
    netloc: str
    params: dict

    @classmethod
    def parse(cls, url: str) -> "BrokerURL":
        """Parse `url`; a bare scheme such as ``paper`` is accepted."""
        if "://" not in url:
            url = url + "://"
        parts = urlsplit(url)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(scheme=parts.scheme, netloc=parts.netloc, params=params)

"""
The paper broker: a simulated market that behaves like an MT5 account.

One `PaperMarket` per server is shared by every account trading on it. Each
symbol's bid follows a seeded random walk, one step per simulated second, and
builds M1 candles; the ask is the bid plus the symbol's spread. Simulated time
runs `speed` times faster than the reactor's clock and is advanced lazily, on
the first call that needs it, so an idle market costs nothing. While it
advances, every open position of every account is checked against each
simulated second: a stop loss or take profit fills, as on a real MT5 server,
at the first price that reached its level (each second's bid is a tick, so
that price may lie a little past the level, or far past it after a jump), and
the account's balance moves by the realised profit, computed the way MT5 does
(price difference x contract size x volume, converted to the account
currency, USD).

Each account has its own `PaperBroker` (balance, open and closed positions).
The market and every account are saved through the store (the
``broker_state`` table) when a position opens or closes and when the server
stops, and loaded when it starts, so open paper positions and paper balances
survive a restart and the market carries on where it stopped.

Like a real broker, the paper broker never tells what it could lose: a fill,
a close or a balance is answered only once the state holding it is saved. A
server killed at any moment (kill -9) restarts on a paper account that has
every position, close and balance its sessions were told of.

URL: ``paper://?seed=7&speed=600&balance=10000&leverage=100`` (all optional).
"""

import collections
import math
import time
from decimal import Decimal, InvalidOperation
from typing import Dict, List, Optional

import attrs
import numpy as np
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tradebot.broker import (
    BUY,
    SELL,
    Broker,
    BrokerBackend,
    BrokerUnavailable,
    BrokerURL,
    Candles,
    ClosedPosition,
    OrderRefused,
    OrderRequest,
    Position,
    SymbolSpec,
    Tick,
    UnknownSymbol,
    to_cents,
)
from tradebot.store.faults import DatabaseFault

ACCOUNT_CURRENCY = "USD"
#: The key under which the store keeps this backend's documents.
STATE_KEY = "paper"
#: Completed M1 bars kept per symbol, and the history made before trading starts.
MAX_BARS = 1000
WARM_UP_BARS = 300
#: Closed positions remembered per account (older ones are in the trades table).
MAX_CLOSED = 500

# MT5 trade server return codes the paper broker uses when it refuses an order.
RETCODE_INVALID = 10013
RETCODE_INVALID_VOLUME = 10014
RETCODE_INVALID_STOPS = 10016
RETCODE_NO_MONEY = 10019
RETCODE_POSITION_CLOSED = 10036


def _spec(name, digits, contract, vmin, vmax, step, stops_level, spread, currency, description):
    return SymbolSpec(
        name=name,
        digits=digits,
        contract_size=Decimal(contract),
        volume_min=Decimal(vmin),
        volume_max=Decimal(vmax),
        volume_step=Decimal(step),
        stops_level=stops_level,
        spread=spread,
        profit_currency=currency,
        description=description,
    )


#: The symbols on offer, with specifications as a typical MT5 broker has them.
CATALOG: Dict[str, SymbolSpec] = {
    "XAUUSD": _spec("XAUUSD", 2, 100, "0.01", "100", "0.01", 10, 20, "USD", "Gold vs US Dollar"),
    "EURUSD": _spec("EURUSD", 5, 100000, "0.01", "100", "0.01", 5, 10, "USD", "Euro vs US Dollar"),
    "GBPUSD": _spec("GBPUSD", 5, 100000, "0.01", "100", "0.01", 5, 14, "USD", "Pound vs US Dollar"),
    "USDJPY": _spec("USDJPY", 3, 100000, "0.01", "100", "0.01", 5, 12, "JPY", "US Dollar vs Yen"),
    "BTCUSD": _spec("BTCUSD", 2, 1, "0.01", "10", "0.01", 100, 1500, "USD", "Bitcoin vs US Dollar"),
}

#: Where each symbol's walk starts and how much it moves: the standard
#: deviation of one simulated second's log return.
_START_PRICE = {"XAUUSD": 2330.0, "EURUSD": 1.085, "GBPUSD": 1.27, "USDJPY": 151.5, "BTCUSD": 65000.0}
_VOLATILITY = {"XAUUSD": 2.8e-05, "EURUSD": 1.0e-05, "GBPUSD": 1.1e-05, "USDJPY": 1.0e-05, "BTCUSD": 8.0e-05}


def profit_in_quote(spec: SymbolSpec, side: str, volume, price_open, price_close) -> Decimal:
    """What `volume` lots of `spec` make from `price_open` to `price_close`,
    in the symbol's profit currency, unrounded: price difference x contract
    size x volume (MT5's rule for forex and CFDs). The paper market and the
    backtester both use it."""
    difference = Decimal(str(price_close)) - Decimal(str(price_open))
    if side == SELL:
        difference = -difference
    return difference * spec.contract_size * Decimal(str(volume))


def profit_in_account(spec: SymbolSpec, side: str, volume, price_open, price_close, rate=None) -> Decimal:
    """What `volume` lots make from `price_open` to `price_close` in the
    account currency (USD), unrounded: the one conversion rule the paper
    market and the backtester share. A USD profit is as it is; the profit of
    a USDxxx symbol (in its quote currency) is converted at `price_close`,
    which is the rate at the moment it closes (for a loss at the stop, the
    stop's price: BUY USDJPY 151.512, stop 150.012, one lot loses 999.92,
    not the 990.10 today's 151.50 would say); any other currency at `rate`
    (dollars per unit now), ValueError without one."""
    raw = profit_in_quote(spec, side, volume, price_open, price_close)
    if spec.profit_currency == ACCOUNT_CURRENCY:
        return raw
    if spec.name == ACCOUNT_CURRENCY + spec.profit_currency:
        return raw / Decimal(str(price_close))
    if rate is None:
        raise ValueError(f"{spec.name}: no rate to convert {spec.profit_currency} to {ACCOUNT_CURRENCY}")
    return raw * Decimal(rate)


def required_margin(spec: SymbolSpec, volume: Decimal, price: Decimal, leverage: Decimal) -> Decimal:
    """Margin in USD for `volume` lots at `price` and `leverage`: the
    position's value in its base currency (USD for XXXUSD, else the quote
    converted) over the leverage. The paper market and the backtester both
    use it."""
    notional = volume * spec.contract_size
    if spec.profit_currency == ACCOUNT_CURRENCY:
        value = notional * price
    else:  # USDJPY and the like: the base currency is USD
        value = notional
    return value / leverage


class _SymbolWalk:
    """One symbol's random walk, its forming bar and its completed bars."""

    def __init__(self, spec: SymbolSpec, rng: np.random.Generator, price: float, volatility: float):
        self.spec = spec
        self.rng = rng
        self.price = price  # the unrounded walk
        self.volatility = volatility
        self.bid = round(price, spec.digits)
        self.forming: Optional[list] = None  # [minute, open, high, low, close]
        self.bars = collections.deque(maxlen=MAX_BARS)  # (time, open, high, low, close)

    def step(self, first_second: int, count: int):
        """Walk `count` seconds from `first_second`; returns (seconds, bids)."""
        returns = self.rng.standard_normal(count) * self.volatility
        path = self.price * np.exp(np.cumsum(returns))
        self.price = float(path[-1])
        bids = np.round(path, self.spec.digits)
        self.bid = float(bids[-1])
        seconds = np.arange(first_second, first_second + count, dtype=np.int64)
        self._add_to_bars(seconds, bids)
        return seconds, bids

    def _add_to_bars(self, seconds: np.ndarray, bids: np.ndarray) -> None:
        minutes = seconds // 60
        starts = np.flatnonzero(np.r_[True, minutes[1:] != minutes[:-1]])
        highs = np.maximum.reduceat(bids, starts)
        lows = np.minimum.reduceat(bids, starts)
        ends = np.r_[starts[1:], len(bids)] - 1
        for start, end, high, low in zip(starts, ends, highs, lows):
            minute = int(minutes[start])
            bar = self.forming
            if bar is not None and bar[0] == minute:
                bar[2] = max(bar[2], float(high))
                bar[3] = min(bar[3], float(low))
                bar[4] = float(bids[end])
                continue
            if bar is not None:
                self.bars.append((bar[0] * 60, bar[1], bar[2], bar[3], bar[4]))
            self.forming = [minute, float(bids[start]), float(high), float(low), float(bids[end])]

    def jumps(self, second: int) -> bool:
        """Whether the bid of `second` may lie past a level its previous
        bid had not reached, with no price in between: True for a random
        walk, whose every second is a tick of its own."""
        return True

    def candles(self, count: int) -> Candles:
        """The latest `count` completed bars."""
        bars = list(self.bars)[-count:] if count > 0 else []
        columns = np.array(bars, dtype=np.float64).reshape(-1, 5)
        return Candles(
            symbol=self.spec.name,
            time=columns[:, 0],
            open=columns[:, 1],
            high=columns[:, 2],
            low=columns[:, 3],
            close=columns[:, 4],
        )

    def save(self) -> dict:
        return {
            "price": self.price,
            "rng": self.rng.bit_generator.state,
            "forming": self.forming,
            "bars": [list(b) for b in list(self.bars)[-WARM_UP_BARS:]],
        }

    def load(self, document: dict) -> None:
        self.price = float(document["price"])
        self.rng.bit_generator.state = document["rng"]
        self.forming = document["forming"]
        self.bars.clear()
        self.bars.extend(tuple(b) for b in document["bars"])
        self.bid = self.forming[4] if self.forming else round(self.price, self.spec.digits)


@attrs.define
class _OpenPosition:
    ticket: int
    account: "PaperBroker"
    symbol: str
    side: str
    volume: Decimal
    open_price: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    opened_at: float
    comment: str

    def to_dict(self) -> dict:
        return {
            "ticket": self.ticket,
            "symbol": self.symbol,
            "side": self.side,
            "volume": str(self.volume),
            "open_price": str(self.open_price),
            "stop_loss": str(self.stop_loss),
            "take_profit": str(self.take_profit),
            "opened_at": self.opened_at,
            "comment": self.comment,
        }


def _closed_to_dict(closed: ClosedPosition) -> dict:
    document = attrs.asdict(closed)
    for key in ("volume", "open_price", "close_price", "profit"):
        document[key] = str(document[key])
    return document


def _closed_from_dict(document: dict) -> ClosedPosition:
    values = dict(document)
    for key in ("volume", "open_price", "close_price", "profit"):
        values[key] = Decimal(values[key])
    return ClosedPosition(**values)


class PaperMarket:
    """The simulated market shared by every paper account of a server.

    `clock` provides ``seconds()`` (the reactor); simulated time is
    ``origin + (clock.seconds() - started) * speed``."""

    def __init__(self, clock, seed: int = 7, speed: float = 1.0, origin: Optional[float] = None):
        self.clock = clock
        self.seed = seed
        self.speed = speed
        if origin is None:
            origin = math.floor(time.time() / 60) * 60
        self._started_real = clock.seconds()
        self._sim_origin = float(origin)
        self._generated_to = int(origin) - WARM_UP_BARS * 60  # the next second to generate
        self.next_ticket = 1
        self.walks: Dict[str, _SymbolWalk] = {}
        for index, (name, spec) in enumerate(sorted(CATALOG.items())):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
            self.walks[name] = self._walk(name, spec, rng)
        self._open: Dict[int, _OpenPosition] = {}
        self.on_change = None  # called after positions close during an advance
        self.advance()

    def _walk(self, name: str, spec: SymbolSpec, rng: np.random.Generator) -> "_SymbolWalk":
        """The price source of one symbol: a seeded random walk."""
        return _SymbolWalk(spec, rng, _START_PRICE[name], _VOLATILITY[name])

    # -- time -----------------------------------------------------------------

    def now(self) -> float:
        """The simulated time, epoch seconds."""
        return self._sim_origin + (self.clock.seconds() - self._started_real) * self.speed

    def real_time_of(self, sim_time: float) -> float:
        """The reactor time at which the simulated clock reads `sim_time`."""
        return self._started_real + (sim_time - self._sim_origin) / self.speed

    def advance(self) -> None:
        """Generate every simulated second up to now and settle the stops it
        crossed."""
        target = int(self.now()) + 1
        closed_any = False
        while self._generated_to < target:
            count = min(target - self._generated_to, 86400)
            first = self._generated_to
            self._generated_to += count
            for name, walk in self.walks.items():
                seconds, bids = walk.step(first, count)
                closed_any |= self._settle(name, walk, seconds, bids)
        if closed_any and self.on_change is not None:
            self.on_change()

    def _settle(self, name: str, walk: "_SymbolWalk", seconds, bids) -> bool:
        """Close the positions on `name` whose stop loss or take profit the
        `bids` of `seconds` reached: at the level where the price moved
        through it, at the price that jumped past it otherwise."""
        positions = [p for p in self._open.values() if p.symbol == name]
        if not positions:
            return False
        spec = walk.spec
        spread = spec.spread * float(spec.point)
        closed_any = False
        for position in positions:
            stop, take = float(position.stop_loss), float(position.take_profit)
            if position.side == BUY:
                hit_stop, hit_take = bids <= stop, bids >= take
            else:
                asks = bids + spread
                hit_stop, hit_take = asks >= stop, asks <= take
            stop_at = int(np.argmax(hit_stop)) if hit_stop.any() else None
            take_at = int(np.argmax(hit_take)) if hit_take.any() else None
            if stop_at is None and take_at is None:
                continue
            if take_at is None or (stop_at is not None and stop_at <= take_at):
                level, reason, at = position.stop_loss, "sl", stop_at
            else:
                level, reason, at = position.take_profit, "tp", take_at
            price = level
            if walk.jumps(seconds[at]):
                bid = spec.round_price(bids[at])
                price = bid if position.side == BUY else bid + spec.spread * spec.point
            self._close(position, price, float(seconds[at]), reason)
            closed_any = True
        return closed_any

    # -- quotes and money -------------------------------------------------------

    def spec(self, name: str) -> SymbolSpec:
        """The symbol's specification; raises `UnknownSymbol`."""
        try:
            return CATALOG[name]
        except KeyError:
            raise UnknownSymbol(f"unknown symbol {name!r}")

    def quote(self, name: str):
        """(bid, ask) now, as Decimals rounded to the symbol's digits."""
        spec = self.spec(name)
        bid = spec.round_price(self.walks[name].bid)
        return bid, bid + spec.spread * spec.point

    def to_account_currency(self, amount: Decimal, currency: str) -> Decimal:
        """Convert `amount` of `currency` to USD at the current bid."""
        if currency == ACCOUNT_CURRENCY:
            return amount
        direct, inverse = currency + ACCOUNT_CURRENCY, ACCOUNT_CURRENCY + currency
        if direct in self.walks:
            return amount * self.quote(direct)[0]
        if inverse in self.walks:
            return amount / self.quote(inverse)[0]
        raise UnknownSymbol(f"no rate to convert {currency} to {ACCOUNT_CURRENCY}")

    def profit(self, side: str, name: str, volume, price_open, price_close) -> Decimal:
        """What `volume` lots make from `price_open` to `price_close`, in USD,
        unrounded: price difference x contract size x volume, converted by
        `profit_in_account` (a cross at today's rate)."""
        spec = self.spec(name)
        rate = None
        if spec.profit_currency != ACCOUNT_CURRENCY and spec.name != ACCOUNT_CURRENCY + spec.profit_currency:
            rate = self.to_account_currency(Decimal(1), spec.profit_currency)
        return profit_in_account(spec, side, volume, price_open, price_close, rate)

    # -- positions -------------------------------------------------------------

    def open(self, account: "PaperBroker", request: OrderRequest) -> _OpenPosition:
        """Fill a market order at the ask (BUY) or bid (SELL); raises
        `OrderRefused` the way an MT5 server would."""
        if request.symbol not in CATALOG:
            raise OrderRefused(f"unknown symbol {request.symbol}", RETCODE_INVALID)
        spec = CATALOG[request.symbol]
        volume = Decimal(request.volume)
        steps = volume / spec.volume_step
        if not (spec.volume_min <= volume <= spec.volume_max) or steps != steps.to_integral_value():
            raise OrderRefused(
                f"invalid volume {volume} (min {spec.volume_min}, max {spec.volume_max}, step {spec.volume_step})",
                RETCODE_INVALID_VOLUME,
            )
        bid, ask = self.quote(request.symbol)
        level = spec.stops_level * spec.point
        if request.side == BUY:
            price = ask
            valid = request.stop_loss <= bid - level and request.take_profit >= bid + level
        else:
            price = bid
            valid = request.stop_loss >= ask + level and request.take_profit <= ask - level
        if not valid:
            raise OrderRefused(
                f"invalid stops: SL {request.stop_loss} / TP {request.take_profit} too close to "
                f"the market (bid {bid}, ask {ask}, stops level {spec.stops_level} points)",
                RETCODE_INVALID_STOPS,
            )
        margin = self._margin(spec, volume, price)
        if margin > account.free_margin():
            raise OrderRefused(
                f"not enough money: margin {to_cents(margin)} needed, {to_cents(account.free_margin())} free",
                RETCODE_NO_MONEY,
            )
        position = _OpenPosition(
            ticket=self.next_ticket,
            account=account,
            symbol=request.symbol,
            side=request.side,
            volume=volume,
            open_price=price,
            stop_loss=spec.round_price(request.stop_loss),
            take_profit=spec.round_price(request.take_profit),
            opened_at=self.now(),
            comment=request.comment,
        )
        self.next_ticket += 1
        self._open[position.ticket] = position
        account.positions[position.ticket] = position
        account.changed = True
        return position

    def _margin(self, spec: SymbolSpec, volume: Decimal, price: Decimal) -> Decimal:
        """Margin in USD at the account's leverage."""
        return required_margin(spec, volume, price, self.leverage)

    leverage = Decimal(100)

    def _close(self, position: _OpenPosition, price: Decimal, closed_at: float, reason: str) -> ClosedPosition:
        profit = to_cents(self.profit(position.side, position.symbol, position.volume, position.open_price, price))
        closed = ClosedPosition(
            ticket=position.ticket,
            symbol=position.symbol,
            side=position.side,
            volume=position.volume,
            open_price=position.open_price,
            close_price=price,
            profit=profit,
            opened_at=position.opened_at,
            closed_at=closed_at,
            reason=reason,
            comment=position.comment,
        )
        del self._open[position.ticket]
        position.account.record_close(closed)
        return closed

    def close(self, account: "PaperBroker", ticket: int) -> ClosedPosition:
        """Close `account`'s open position `ticket` at the bid (BUY) or ask
        (SELL) now, reason ``expert``; raises `OrderRefused` if it has no
        such open position."""
        position = account.positions.get(ticket)
        if position is None:
            raise OrderRefused(f"no open position {ticket}", RETCODE_POSITION_CLOSED)
        bid, ask = self.quote(position.symbol)
        price = bid if position.side == BUY else ask
        return self._close(position, price, self.now(), "expert")

    def current(self, position: _OpenPosition) -> Position:
        """The open position as the broker interface reports it."""
        bid, ask = self.quote(position.symbol)
        price = bid if position.side == BUY else ask
        return Position(
            ticket=position.ticket,
            symbol=position.symbol,
            side=position.side,
            volume=position.volume,
            open_price=position.open_price,
            stop_loss=position.stop_loss,
            take_profit=position.take_profit,
            current_price=price,
            profit=to_cents(self.profit(position.side, position.symbol, position.volume, position.open_price, price)),
            opened_at=position.opened_at,
            comment=position.comment,
        )

    def adopt(self, position: _OpenPosition) -> None:
        """Put back a position loaded from saved state."""
        self._open[position.ticket] = position

    # -- state ------------------------------------------------------------------

    def save(self) -> dict:
        """The market as a JSON-able document."""
        return {
            "seed": self.seed,
            "sim_time": self.now(),
            "generated_to": self._generated_to,
            "next_ticket": self.next_ticket,
            "symbols": {name: walk.save() for name, walk in self.walks.items()},
        }

    def load(self, document: dict) -> None:
        """Carry on from a saved market: its prices, bars, random state and
        simulated time (which resumes where it stopped, not where the wall
        clock is now)."""
        self.seed = document["seed"]
        self._sim_origin = float(document["sim_time"])
        self._started_real = self.clock.seconds()
        self._generated_to = int(document["generated_to"])
        self.next_ticket = int(document["next_ticket"])
        for name, saved in document["symbols"].items():
            if name in self.walks:
                self.walks[name].load(saved)


class _ReplayWalk(_SymbolWalk):
    """A symbol whose bid replays given M1 bars, a bar a minute: each bar's
    open for its first 15 seconds, then the extreme nearer the open's side
    (the low of a rising bar, the high of a falling one), then the other
    extreme, then the close for its last 15 seconds. Before the first bar
    the bid is its open, after the last one its close. Inside a bar the price
    passes through every level between its quarters (a level crossed there
    fills at the level, as the backtester fills it); a bar's open may have
    gapped from the previous close (a level it jumped past fills at the open)."""

    def __init__(self, spec: SymbolSpec, rng: np.random.Generator, bars):
        self.source = bars
        rising = bars.close >= bars.open
        # the bid of each quarter of each bar: open, first extreme, second, close
        self.quarters = np.column_stack(
            [
                bars.open,
                np.where(rising, bars.low, bars.high),
                np.where(rising, bars.high, bars.low),
                bars.close,
            ]
        )
        super().__init__(spec, rng, float(bars.open[0]), 0.0)

    def step(self, first_second: int, count: int):
        """The replayed bids of `count` seconds from `first_second`."""
        seconds = np.arange(first_second, first_second + count, dtype=np.int64)
        offset = seconds - int(self.source.time[0])
        bar = np.clip(offset // 60, 0, len(self.source) - 1)
        quarter = np.where(offset < 0, 0, np.where(offset // 60 >= len(self.source), 3, (offset % 60) // 15))
        bids = np.round(self.quarters[bar, quarter], self.spec.digits)
        self.price = float(bids[-1])
        self.bid = float(bids[-1])
        self._add_to_bars(seconds, bids)
        return seconds, bids

    def jumps(self, second: int) -> bool:
        """True at the first second of each replayed bar (its open)."""
        return (int(second) - int(self.source.time[0])) % 60 == 0


class BarReplayMarket(PaperMarket):
    """A paper market whose `symbol` replays given M1 bars (an object with
    float arrays ``time``, ``open``, ``high``, ``low``, ``close``, times on
    whole minutes one minute apart, e.g. `tradebot.backtest.bars.Bars`) and
    whose other symbols walk as usual: for tests and demos that must see
    known prices. Simulated time starts `WARM_UP_BARS` bars into the series,
    so a strategy has that history at once; the stops are settled second by
    second on the replayed bids like any paper price."""

    def __init__(self, clock, symbol: str, bars, seed: int = 7, speed: float = 1.0):
        times = np.asarray(bars.time)
        if len(times) <= WARM_UP_BARS:
            raise ValueError(f"a bar replay needs more than {WARM_UP_BARS} bars")
        if times[0] % 60 or np.any(np.diff(times) != 60):
            raise ValueError("a bar replay needs M1 bars on whole minutes, one minute apart")
        self._replay_symbol = symbol
        self._replay_bars = bars
        super().__init__(clock, seed=seed, speed=speed, origin=float(times[0]) + WARM_UP_BARS * 60)

    def _walk(self, name, spec, rng):
        if name == self._replay_symbol:
            return _ReplayWalk(spec, rng, self._replay_bars)
        return super()._walk(name, spec, rng)


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


def _param(params: dict, key: str, kind, default, check, meaning: str):
    if key not in params:
        return default
    try:
        value = kind(params[key])
    except (ValueError, InvalidOperation):
        raise ValueError(f"paper broker: {key} must be {meaning}, not {params[key]!r}")
    if not check(value):
        raise ValueError(f"paper broker: {key} must be {meaning}, not {params[key]!r}")
    return value


class PaperBackend(BrokerBackend):
    """The paper broker a ``paper://`` URL names: one market, many accounts."""

    _log = Logger()
    name = "paper"

    def description(self) -> str:
        """The paper URL: its seed, speed, balance and leverage are no secret."""
        return self.url

    def __init__(self, store=None, reactor=None, seed=7, speed=1.0, balance=Decimal(10000), leverage=100, market=None):
        if reactor is None:
            from twisted.internet import reactor
        self.store = store
        self.reactor = reactor
        self.seed = seed
        self.speed = speed
        self.default_balance = balance
        self.leverage = leverage
        self.url = f"paper://?seed={seed}&speed={speed:g}&balance={balance}&leverage={leverage}"
        #: Where simulated time starts for a new market (default: this minute).
        self.origin: Optional[float] = None
        self.market: Optional[PaperMarket] = None
        #: A market to start with instead of a new random one (a `BarReplayMarket`).
        self._given_market = market
        self._accounts: Dict[str, PaperBroker] = {}
        self._saved: dict = {}
        #: Deferreds of the saves asked for since the write under way began.
        self._save_waiters: List[defer.Deferred] = []
        self._writing = None  # (changes it holds, its waiters) while a write is under way
        self._changes = 0  # positions opened or closed so far
        self._saved_to = 0  # how many of them the store holds

    @classmethod
    def from_url(cls, url: BrokerURL, store=None, reactor=None) -> "PaperBackend":
        """The backend for a parsed ``paper`` URL; ValueError on a bad parameter."""
        unknown = set(url.params) - {"seed", "speed", "balance", "leverage"}
        if unknown:
            raise ValueError(f"paper broker: unknown parameter(s) {', '.join(sorted(unknown))}")
        params = url.params
        return cls(
            store=store,
            reactor=reactor,
            seed=_param(params, "seed", int, 7, lambda v: v >= 0, "a whole number from 0"),
            speed=_param(params, "speed", float, 1.0, lambda v: 0 < v <= 100000 and math.isfinite(v), "a number of simulated seconds per second, over 0"),
            balance=_param(params, "balance", Decimal, Decimal(10000), lambda v: v.is_finite() and v > 0, "an amount over 0"),
            leverage=_param(params, "leverage", int, 100, lambda v: v >= 1, "a whole number from 1"),
        )

    def known_symbols(self):
        """The paper catalog's symbol names."""
        return frozenset(CATALOG)

    @defer.inlineCallbacks
    def start(self):
        """Build the market, or load the saved one and its accounts."""
        self.market = self._given_market or PaperMarket(self.reactor, seed=self.seed, speed=self.speed, origin=self.origin)
        self.market.leverage = Decimal(self.leverage)
        self.market.on_change = self._changed
        if self.store is not None:
            self._saved = yield self.store.load_broker_state(STATE_KEY)
        if "market" in self._saved:
            self.market.load(self._saved["market"])
            if self.market.seed != self.seed:
                self._log.warn(
                    "carrying on the saved paper market (seed {saved}); seed {asked} is ignored",
                    saved=self.market.seed,
                    asked=self.seed,
                )
            for key, document in self._saved.items():
                if key.startswith("account:"):
                    self._account(key[len("account:") :], None).load(document)
            self._log.info(
                "paper market resumed: {n} account(s), {open} open position(s)",
                n=len(self._accounts),
                open=sum(len(a.positions) for a in self._accounts.values()),
            )

    def stop(self):
        """Deferred: everything saved."""
        if self.market is None:
            return defer.succeed(None)
        return self.save()

    def broker_for(self, account_key: str, initial_balance) -> PaperBroker:
        """The same `PaperBroker` for every call with the same key; a new
        account starts with `initial_balance` (or the URL's balance)."""
        return self._account(account_key, initial_balance)

    def _account(self, key: str, initial_balance) -> PaperBroker:
        broker = self._accounts.get(key)
        if broker is None:
            balance = self.default_balance if initial_balance is None else Decimal(initial_balance)
            broker = self._accounts[key] = PaperBroker(self.market, key, balance, self._opened, self.durable)
        return broker

    def _opened(self):
        self._changes += 1
        return self.save()

    def _changed(self) -> None:
        self._changes += 1
        self.save().addErrback(self._save_failed)

    def _save_failed(self, failure) -> None:
        if failure.check(DatabaseFault):  # the store says so; the next save writes what changed
            self._log.warn("saving the paper market failed: {error}", error=failure.value)
        else:
            self._log.failure("saving the paper market failed", failure)

    def durable(self):
        """Deferred: fires once every position opened or closed so far is
        saved (at once when it is); fails if saving it fails."""
        if self._saved_to >= self._changes:
            return defer.succeed(None)
        if self._writing is not None and self._writing[0] >= self._changes:
            waiter = defer.Deferred()
            self._writing[1].append(waiter)
            return waiter
        return self.save()

    def save(self):
        """Deferred: the market and every account as they are now saved in one
        transaction.

        Saves coalesce: while one is being written, every save asked for
        meanwhile waits for a single next write, whose snapshot is taken when
        it starts and so holds all of their changes. However fast the market
        changes, at most one snapshot is held and one write is queued; and a
        write carries the market and only the accounts that changed."""
        if self.store is None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._save_waiters.append(waiter)
        if self._writing is None:
            self._write_next()
        return waiter

    def _write_next(self) -> None:
        waiters, self._save_waiters = self._save_waiters, []
        if not waiters:
            return
        changes = self._changes
        self._writing = (changes, waiters)
        # the market always; of the accounts, only those that changed
        changed = [broker for broker in self._accounts.values() if broker.changed]
        try:
            documents = {"market": self.market.save()}
            for broker in changed:
                documents["account:" + broker.key] = broker.save()
                broker.changed = False
            written = self.store.save_broker_state(STATE_KEY, documents)
        except Exception:
            written = defer.fail()

        def _settle(result):
            self._writing = None
            if isinstance(result, Failure):
                for broker in changed:
                    broker.changed = True  # the next write carries them again
            else:
                self._saved_to = max(self._saved_to, changes)
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)
            self._write_next()

        written.addBoth(_settle)

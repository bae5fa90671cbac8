"""
The simulated market shared by every paper account of a server: simulated
time, the ticks of every symbol, the stops they reach (filled at the first
tick past the level), the positions and their money; `BarReplayMarket`
replays given bars for one symbol.
"""

import math
import time
from decimal import Decimal
from typing import Dict, Optional

import attrs
import numpy as np

from tradebot.broker import (
    BUY,
    ClosedPosition,
    OrderRefused,
    OrderRequest,
    Position,
    SymbolSpec,
    UnknownSymbol,
    to_cents,
)
from tradebot.brokers.paper.catalog import (
    _START_PRICE,
    _VOLATILITY,
    ACCOUNT_CURRENCY,
    CATALOG,
    RETCODE_INVALID,
    RETCODE_INVALID_STOPS,
    RETCODE_INVALID_VOLUME,
    RETCODE_NO_MONEY,
    RETCODE_POSITION_CLOSED,
    WARM_UP_BARS,
    profit_in_account,
    required_margin,
)
from tradebot.brokers.paper.walks import _ReplayWalk, _SymbolWalk


@attrs.define
class _OpenPosition:
    ticket: int
    account: object  # its PaperBroker (tradebot.brokers.paper.account, which imports this module)
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

    def open(self, account, request: OrderRequest) -> _OpenPosition:
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

    def close(self, account, ticket: int) -> ClosedPosition:
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

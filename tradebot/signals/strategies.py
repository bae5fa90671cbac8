"""
Signal strategies: completed candles in, BUY / SELL / nothing out, with the
stop-loss and take-profit distances the trade should carry.

A strategy has

- `name`;
- `candles_needed`: how many of the latest completed candles it reads;
- `stops`: its stop-loss / take-profit helper (`AtrStops` or `FixedStops`),
  which every strategy takes, and which also sets the stops of a signal that
  comes without them (a webhook alert, an HTTP provider's answer);
- `asynchronous`: False for the strategies here, which compute;
- ``evaluate(candles, spec)``: an ``Optional[Signal]``, or, for an
  asynchronous strategy (`tradebot.signals.remote.HttpStrategy`), a Deferred firing
  with one.

The local strategies hold no state between calls and read nothing but the
candles and the symbol's spec, so one strategy object serves every account and
symbol, a signal is computed once per set of candles (see `tradebot.trading.market`),
and a backtester gets the live verdicts by calling `evaluate` on each sliding
window of `candles_needed` bars.

Strategies are chosen by name (`tradebot.signals.names`), with optional parameters:
``ma_cross``, ``ma_cross:fast=8,slow=21``, ``rsi_reversal:period=14,low=25,high=75``,
``bollinger_breakout:period=20,width=2``, ``http:timeout=3,url=https://...``
(the URL last: it runs to the end of the text), and the stops with
``stops=atr`` (``atr=14,sl_atr=1.5,tp_atr=3``) or ``stops=fixed``
(``sl_points=200,tp_points=400``).
"""

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Optional, Tuple

import attrs
import numpy as np

from tradebot.broker import BUY, SELL, SIDES, Candles, SymbolSpec
from tradebot.signals import indicators


class StopsRejected(ValueError):
    """A signal's stop-loss or take-profit price cannot be used at the entry
    price the market gives (on the wrong side, or too close); the message
    says which, for the client."""


@attrs.frozen
class Signal:
    """A trade to open: its side, and where its stop loss and take profit go,
    each either as a distance from the entry price (a positive price
    distance) or as a price."""

    side: str = attrs.field(validator=attrs.validators.in_(SIDES))
    stop_distance: Optional[Decimal] = None
    take_distance: Optional[Decimal] = None
    stop_price: Optional[Decimal] = attrs.field(default=None, kw_only=True)
    take_price: Optional[Decimal] = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self):
        for what, distance, price in (
            ("stop loss", self.stop_distance, self.stop_price),
            ("take profit", self.take_distance, self.take_price),
        ):
            if (distance is None) == (price is None):
                raise ValueError(f"a signal's {what} is a distance or a price (one of them)")
            if distance is not None and not distance > 0:
                raise ValueError(f"a signal's {what} distance must be more than 0")

    def levels(self, entry: Decimal, spec: SymbolSpec) -> Tuple[Decimal, Decimal]:
        """(stop loss, take profit) for a trade entered at `entry`, rounded to
        the symbol's digits. A distance is widened to the broker's stops level
        plus spread; a price must already lie that far (and at least a point)
        on its side of the entry, else `StopsRejected`."""
        direction = 1 if self.side == BUY else -1
        floor = (spec.stops_level + spec.spread) * spec.point
        levels = []
        for what, sign, distance, price in (
            ("stop loss", -1, self.stop_distance, self.stop_price),
            ("take profit", 1, self.take_distance, self.take_price),
        ):
            if price is None:
                level = spec.round_price(entry + sign * direction * max(distance, floor))
                if level <= 0:
                    raise StopsRejected(f"a {what} {distance} from the entry price {entry} is not a price")
                levels.append(level)
                continue
            price = spec.round_price(price)
            need = max(floor, spec.point)
            if sign * direction * (price - entry) < need:
                where = "above" if sign * direction > 0 else "below"
                raise StopsRejected(
                    f"{what} {price} is not {where} the entry price {entry} by at least {need}"
                )
            levels.append(price)
        return levels[0], levels[1]


def _distance(value: float, spec: SymbolSpec) -> Decimal:
    """A price distance rounded to the symbol's point and kept far enough from
    the market for the broker to accept it (stops level plus spread)."""
    least = (spec.stops_level + spec.spread + 1) * spec.point
    exact = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    rounded = exact.quantize(spec.point, rounding=ROUND_HALF_EVEN)
    return max(rounded, least)


@attrs.frozen
class AtrStops:
    """Stops at multiples of the Average True Range of the candles."""

    period: int = 14
    stop_multiple: float = 1.5
    take_multiple: float = 3.0

    @property
    def candles_needed(self) -> int:
        """Candles for a settled ATR."""
        return 4 * self.period

    def distances(self, candles: Candles, spec: SymbolSpec) -> Optional[Tuple[Decimal, Decimal]]:
        """(stop distance, take distance), or None while the ATR is undefined."""
        value = indicators.atr(candles.high, candles.low, candles.close, self.period)[-1]
        if not np.isfinite(value) or value <= 0:
            return None
        return _distance(value * self.stop_multiple, spec), _distance(value * self.take_multiple, spec)


@attrs.frozen
class FixedStops:
    """Stops a fixed number of points from the entry, for every symbol."""

    stop_points: int = 200
    take_points: int = 400

    candles_needed = 0

    def distances(self, candles: Candles, spec: SymbolSpec) -> Tuple[Decimal, Decimal]:
        """(stop distance, take distance) in price."""
        return (
            _distance(float(self.stop_points * spec.point), spec),
            _distance(float(self.take_points * spec.point), spec),
        )


def _crossed(a: np.ndarray, b: np.ndarray) -> int:
    """+1 if `a` crossed above `b` on the last value, -1 if below, else 0."""
    if len(a) < 2 or not np.all(np.isfinite([a[-2], a[-1], b[-2], b[-1]])):
        return 0
    if a[-2] <= b[-2] and a[-1] > b[-1]:
        return 1
    if a[-2] >= b[-2] and a[-1] < b[-1]:
        return -1
    return 0


def _stops_field():
    return attrs.field(factory=AtrStops)


@attrs.frozen
class MovingAverageCross:
    """BUY when the fast simple moving average of the closes crosses above
    the slow one on the last completed bar, SELL when it crosses below."""

    fast: int = 5
    slow: int = 20
    stops: object = _stops_field()
    name: str = "ma_cross"
    asynchronous = False

    def __attrs_post_init__(self):
        if not 1 <= self.fast < self.slow:
            raise ValueError("ma_cross needs 1 <= fast < slow")

    @property
    def candles_needed(self) -> int:
        """Candles for both averages on the last two bars, and the stops."""
        return max(self.slow + 2, self.stops.candles_needed)

    def evaluate(self, candles: Candles, spec: SymbolSpec) -> Optional[Signal]:
        """The signal on the latest candles, or None."""
        if len(candles) < self.slow + 1:
            return None
        crossed = _crossed(indicators.sma(candles.close, self.fast), indicators.sma(candles.close, self.slow))
        return _signal(crossed, self.stops, candles, spec)


@attrs.frozen
class RsiReversal:
    """BUY when Wilder's RSI climbs back above `low` (leaving oversold),
    SELL when it falls back below `high` (leaving overbought)."""

    period: int = 14
    low: float = 30.0
    high: float = 70.0
    stops: object = _stops_field()
    name: str = "rsi_reversal"
    asynchronous = False

    def __attrs_post_init__(self):
        if self.period < 2 or not 0 < self.low < self.high < 100:
            raise ValueError("rsi_reversal needs period >= 2 and 0 < low < high < 100")

    @property
    def candles_needed(self) -> int:
        """Candles for a settled RSI on the last two bars, and the stops."""
        return max(4 * self.period + 2, self.stops.candles_needed)

    def evaluate(self, candles: Candles, spec: SymbolSpec) -> Optional[Signal]:
        """The signal on the latest candles, or None."""
        values = indicators.rsi(candles.close, self.period)
        if len(values) < 2 or not np.all(np.isfinite(values[-2:])):
            return None
        before, now = values[-2], values[-1]
        crossed = 0
        if before < self.low <= now:
            crossed = 1
        elif before > self.high >= now:
            crossed = -1
        return _signal(crossed, self.stops, candles, spec)


@attrs.frozen
class BollingerBreakout:
    """BUY when the close breaks out above the upper Bollinger band (the last
    completed bar closes above it, the one before did not), SELL when it
    breaks out below the lower one. The bands are `width` population standard
    deviations of `period` closes around their simple moving average
    (`tradebot.signals.indicators.bollinger`)."""

    period: int = 20
    width: float = 2.0
    stops: object = _stops_field()
    name: str = "bollinger_breakout"
    asynchronous = False

    def __attrs_post_init__(self):
        if self.period < 2 or not self.width > 0:
            raise ValueError("bollinger_breakout needs period >= 2 and width > 0")

    @property
    def candles_needed(self) -> int:
        """Candles for the bands on the last two bars, and the stops."""
        return max(self.period + 1, self.stops.candles_needed)

    def evaluate(self, candles: Candles, spec: SymbolSpec) -> Optional[Signal]:
        """The signal on the latest candles, or None."""
        if len(candles) < self.period + 1:
            return None
        _, upper, lower = indicators.bollinger(candles.close, self.period, self.width)
        crossed = 0
        if _crossed(candles.close, upper) > 0:
            crossed = 1
        elif _crossed(candles.close, lower) < 0:
            crossed = -1
        return _signal(crossed, self.stops, candles, spec)


def signal_with_stops(side: str, stops, candles: Candles, spec: SymbolSpec, **given) -> Optional[Signal]:
    """A `side` signal whose stop loss and take profit are those `given`
    (``stop_price``, ``stop_distance``, ``take_price``, ``take_distance``:
    a distance is rounded to the point and kept clear of the stops level,
    like the helper's), each one missing taken from `stops`; None when
    `stops` is needed but cannot give them (an undefined ATR)."""
    levels = {}
    for kind in ("stop", "take"):
        price, distance = given.get(f"{kind}_price"), given.get(f"{kind}_distance")
        if price is not None:
            levels[f"{kind}_price"] = Decimal(price)
        elif distance is not None:
            levels[f"{kind}_distance"] = _distance(distance, spec)
    if len(levels) < 2:
        helped = stops.distances(candles, spec)
        if helped is None:
            return None
        for kind, value in zip(("stop", "take"), helped):
            if f"{kind}_price" not in levels and f"{kind}_distance" not in levels:
                levels[f"{kind}_distance"] = value
    return Signal(side, **levels)


def _signal(crossed: int, stops, candles: Candles, spec: SymbolSpec) -> Optional[Signal]:
    if crossed == 0:
        return None
    distances = stops.distances(candles, spec)
    if distances is None:
        return None
    return Signal(BUY if crossed > 0 else SELL, *distances)

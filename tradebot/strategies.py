"""
Signal strategies: completed candles in, BUY / SELL / nothing out, with the
stop-loss and take-profit distances the trade should carry.

A strategy has a `name`, the number of candles it needs (`candles_needed`) and
``evaluate(candles, spec) -> Optional[Signal]``. It holds no state between
calls, so one strategy object serves every account and symbol, and a signal
is computed once per set of candles (see `tradebot.market`).

Strategies are chosen by name, with optional parameters:
``ma_cross``, ``ma_cross:fast=8,slow=21``, ``rsi_reversal:period=14,low=25,high=75``,
and the stops with ``stops=atr`` (``atr=14,sl_atr=1.5,tp_atr=3``) or
``stops=fixed`` (``sl_points=200,tp_points=400``).
"""

import math
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Dict, Optional, Tuple

import attrs
import numpy as np

from tradebot import indicators
from tradebot.broker import BUY, SELL, SIDES, Candles, SymbolSpec


@attrs.frozen
class Signal:
    """A trade to open: its side and how far from the entry price its stop
    loss and take profit lie (positive price distances)."""

    side: str = attrs.field(validator=attrs.validators.in_(SIDES))
    stop_distance: Decimal
    take_distance: Decimal


def _distance(value: float, spec: SymbolSpec) -> Decimal:
    """A price distance rounded to the symbol's point and kept far enough from
    the market for the broker to accept it (stops level plus spread)."""
    least = (spec.stops_level + spec.spread + 1) * spec.point
    rounded = Decimal(repr(float(value))).quantize(spec.point, rounding=ROUND_HALF_EVEN)
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


@attrs.frozen
class MovingAverageCross:
    """BUY when the fast simple moving average of the closes crosses above
    the slow one on the last completed bar, SELL when it crosses below."""

    fast: int = 5
    slow: int = 20
    stops: object = attrs.field(factory=AtrStops)
    name: str = "ma_cross"

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
    stops: object = attrs.field(factory=AtrStops)
    name: str = "rsi_reversal"

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


def _signal(crossed: int, stops, candles: Candles, spec: SymbolSpec) -> Optional[Signal]:
    if crossed == 0:
        return None
    distances = stops.distances(candles, spec)
    if distances is None:
        return None
    return Signal(BUY if crossed > 0 else SELL, *distances)


# -- by name -----------------------------------------------------------------------

DEFAULT_STRATEGY = "ma_cross"

_STRATEGIES = {
    "ma_cross": (MovingAverageCross, {"fast": int, "slow": int}),
    "rsi_reversal": (RsiReversal, {"period": int, "low": float, "high": float}),
}
_STOPS = {
    "atr": (AtrStops, {"atr": ("period", int), "sl_atr": ("stop_multiple", float), "tp_atr": ("take_multiple", float)}),
    "fixed": (FixedStops, {"sl_points": ("stop_points", int), "tp_points": ("take_points", int)}),
}
STRATEGY_NAMES = tuple(_STRATEGIES)


def strategy_from_name(text: str):
    """The strategy ``name[:key=value,...]`` describes; raises ValueError with
    a readable message for an unknown name, key or value."""
    name, _, rest = text.strip().partition(":")
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGY_NAMES)})")
    params = _parse_params(rest, text)
    cls, own = _STRATEGIES[name]
    stops_name = params.pop("stops", "atr")
    if stops_name not in _STOPS:
        raise ValueError(f"unknown stops {stops_name!r} in {text!r} (known: {', '.join(_STOPS)})")
    stops_cls, stop_keys = _STOPS[stops_name]
    kwargs, stop_kwargs = {}, {}
    for key, value in params.items():
        if key in own:
            kwargs[key] = _convert(own[key], key, value, text)
        elif key in stop_keys:
            field, kind = stop_keys[key]
            stop_kwargs[field] = _convert(kind, key, value, text)
            if stop_kwargs[field] <= 0:
                raise ValueError(f"{key} must be more than 0 in {text!r}")
        else:
            known = ", ".join(list(own) + ["stops"] + list(stop_keys))
            raise ValueError(f"unknown parameter {key!r} in {text!r} (known: {known})")
    return cls(stops=stops_cls(**stop_kwargs), **kwargs)


def _parse_params(rest: str, text: str) -> Dict[str, str]:
    params = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise ValueError(f"malformed parameter {item!r} in {text!r}: use key=value")
        if key.strip() in params:
            raise ValueError(f"{key.strip()!r} is given twice in {text!r}")
        params[key.strip()] = value.strip()
    return params


def _convert(kind, key: str, value: str, text: str):
    meaning = "a whole number" if kind is int else "a finite number"
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"{key} must be {meaning} in {text!r}")
    if not math.isfinite(number):
        raise ValueError(f"{key} must be {meaning} in {text!r}")
    return number

"""
Screens: a whole-series pass that finds the bars on which a strategy *may*
signal, so the backtester calls the strategy's own `evaluate` only there.

A screen never decides a signal: the backtester still calls
``strategy.evaluate`` on the same window of `candles_needed` bars the live
session reads, at every bar the screen keeps. A screen must only never drop a
bar on which `evaluate` would signal; it keeps every bar whose indicator
values come within a tolerance of a crossing, so floating-point differences
between the whole-series and the windowed arithmetic cannot make it miss one
(``tests/test_backtest.py`` checks this against evaluating every bar). A
strategy without a screen is evaluated on every bar while flat.
"""

from typing import Optional

import numpy as np

from tradebot.signals import indicators
from tradebot.signals.strategies import BollingerBreakout, MovingAverageCross

#: Indicator values this close (relative to the price) count as touching.
TOLERANCE = 1e-9


def screen(strategy, bars) -> Optional[np.ndarray]:
    """A boolean array over `bars`: True at bar ``e`` when evaluating the
    window ending at ``e`` (inclusive) may give a signal; None when the
    strategy has no screen."""
    if isinstance(strategy, MovingAverageCross):
        fast = indicators.sma(bars.close, strategy.fast)
        slow = indicators.sma(bars.close, strategy.slow)
        return _may_cross(fast, slow, bars.close)
    if isinstance(strategy, BollingerBreakout):
        middle, upper, lower = indicators.bollinger(bars.close, strategy.period, strategy.width)
        return _may_cross(bars.close, upper, bars.close) | _may_cross(bars.close, lower, bars.close)
    return None


def _may_cross(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """True where `a` may cross `b` between the previous value and this one:
    the difference changes sign or comes within the tolerance of zero at
    either end (NaN, where an indicator is not yet defined, counts as near)."""
    tol = TOLERANCE * np.abs(scale)
    d = a - b
    near = ~(np.abs(d) > tol)  # NaN is near
    up = ~(d > tol)  # at or below, or near
    down = ~(d < -tol)
    out = np.zeros(len(d), dtype=bool)
    out[1:] = near[1:] | near[:-1] | (up[:-1] & down[1:]) | (down[:-1] & up[1:])
    out[0] = True
    return out

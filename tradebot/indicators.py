"""
Technical indicators on numpy float arrays, with the textbook definitions.

Every function returns an array as long as its input, holding NaN where the
indicator is not yet defined (the warm-up bars), so results line up with the
candles they came from.
"""

import numpy as np


def _floats(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def sma(values, period: int) -> np.ndarray:
    """Simple moving average over `period` values; NaN for the first period-1."""
    if period < 1:
        raise ValueError("period must be at least 1")
    x = _floats(values)
    out = np.full(x.shape, np.nan)
    if len(x) >= period:
        # a mean per window, not a difference of running sums, so equal
        # prices give exactly equal averages
        out[period - 1 :] = np.lib.stride_tricks.sliding_window_view(x, period).mean(axis=1)
    return out


def ema(values, period: int) -> np.ndarray:
    """Exponential moving average, alpha 2/(period+1), seeded with the simple
    average of the first `period` values; NaN before that."""
    _check_period(period)
    return _recursive(_floats(values), period, 2.0 / (period + 1))


def wilder(values, period: int) -> np.ndarray:
    """Wilder's smoothing (an EMA with alpha 1/period) seeded with the simple
    average of the first `period` values; NaN before that."""
    _check_period(period)
    return _recursive(_floats(values), period, 1.0 / period)


def _check_period(period: int) -> None:
    if period < 1:
        raise ValueError("period must be at least 1")


def _recursive(x: np.ndarray, period: int, alpha: float) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if len(x) < period:
        return out
    value = x[:period].mean()
    out[period - 1] = value
    keep = 1.0 - alpha
    for i in range(period, len(x)):
        value = keep * value + alpha * x[i]
        out[i] = value
    return out


def rsi(close, period: int = 14) -> np.ndarray:
    """Wilder's Relative Strength Index, 0..100: the first value at index
    `period` (it needs `period` price changes); 100 when nothing fell."""
    c = _floats(close)
    out = np.full(c.shape, np.nan)
    if len(c) <= period:
        return out
    change = np.diff(c)
    gain = wilder(np.clip(change, 0, None), period)
    loss = wilder(np.clip(-change, 0, None), period)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(loss == 0, 100.0, 100.0 - 100.0 / (1.0 + gain / loss))
    value = np.where(np.isnan(gain), np.nan, value)
    out[1:] = value
    return out


def true_range(high, low, close) -> np.ndarray:
    """True range: the bar's high-low range widened to the previous close
    (the first bar has no previous close: its high minus low)."""
    h, l, c = _floats(high), _floats(low), _floats(close)
    out = h - l
    if len(c) > 1:
        previous = c[:-1]
        out[1:] = np.maximum.reduce([h[1:] - l[1:], np.abs(h[1:] - previous), np.abs(l[1:] - previous)])
    return out


def atr(high, low, close, period: int = 14) -> np.ndarray:
    """Wilder's Average True Range: the first value the average of the
    first `period` true ranges, then Wilder's smoothing."""
    return wilder(true_range(high, low, close), period)

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
    """``y[p-1] = mean(x[:p])``, then ``y[i] = (1 - alpha) * y[i-1] + alpha * x[i]``,
    computed a block at a time without a Python loop per value: inside a block
    that starts after a known ``y[s]``,
    ``y[s+j] = keep**j * (y[s] + alpha * sum(keep**-k * x[s+k] for k in 1..j))``,
    the blocks short enough that ``keep**-j`` stays far from overflow."""
    out = np.full(x.shape, np.nan)
    if len(x) < period:
        return out
    out[period - 1] = x[:period].mean()
    keep = 1.0 - alpha
    if keep == 0.0:  # alpha 1: the series itself
        out[period:] = x[period:]
        return out
    block = max(1, min(_MAX_BLOCK, int(_MAX_GROWTH / -np.log(keep))))
    powers = keep ** np.arange(1, block + 1, dtype=np.float64)
    start = period - 1
    while start < len(x) - 1:
        values = x[start + 1 : start + 1 + block]
        grow = powers[: len(values)]
        out[start + 1 : start + 1 + len(values)] = grow * (out[start] + alpha * np.cumsum(values / grow))
        start += len(values)
    return out


#: ``keep ** -block`` is at most e**_MAX_GROWTH (about 1e43), and a block holds
#: at most _MAX_BLOCK values.
_MAX_GROWTH = 100.0
_MAX_BLOCK = 4096


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


def bollinger(close, period: int = 20, width: float = 2.0):
    """Bollinger Bands: (middle, upper, lower), the middle the simple moving
    average of `period` closes and the bands `width` standard deviations
    above and below it. The standard deviation is the *population* one over
    the window (divided by `period`, not period - 1), as TradingView's
    ``ta.stdev`` and MT5's Bollinger Bands compute it; NaN for the first
    period-1 values."""
    if period < 1:
        raise ValueError("period must be at least 1")
    x = _floats(close)
    middle = sma(x, period)
    deviation = np.full(x.shape, np.nan)
    if len(x) >= period:
        windows = np.lib.stride_tricks.sliding_window_view(x, period)
        # from the same window means as `middle`, so the bands are symmetric about it
        centred = windows - middle[period - 1 :, None]
        deviation[period - 1 :] = np.sqrt((centred * centred).mean(axis=1))
    return middle, middle + width * deviation, middle - width * deviation

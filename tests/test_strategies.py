"""
Tests of `tradebot.signals.indicators` and `tradebot.signals.strategies`.

The indicator tests compare against values worked out by hand for short
series (the arithmetic is in the comments and expressions next to each
expected value), never against the functions under test. The strategy tests
feed hand-built `Candles` whose moving averages / RSI cross exactly where the
test wants, and check the stops, the by-name parser and `candles_needed`.
"""

from decimal import Decimal

import numpy as np
import pytest

from tradebot.broker import BUY, SELL, Candles, SymbolSpec
from tradebot.signals import indicators
from tradebot.signals.names import DEFAULT_STRATEGY, STRATEGY_NAMES, strategy_from_name
from tradebot.signals.strategies import (
    AtrStops,
    BollingerBreakout,
    FixedStops,
    MovingAverageCross,
    RsiReversal,
    Signal,
    StopsRejected,
    signal_with_stops,
)

# point 0.00001, stops level 5 points, spread 10 points: the least stop
# distance is (5 + 10 + 1) * 0.00001 = 0.00016.
EURUSD = SymbolSpec("EURUSD", 5, Decimal(100000), Decimal("0.01"), Decimal(100), Decimal("0.01"), 5, 10)
# point 0.01, least stop distance (5 + 10 + 1) * 0.01 = 0.16.
INDEX = SymbolSpec("US500", 2, Decimal(1), Decimal("0.1"), Decimal(100), Decimal("0.1"), 5, 10)

NAN = float("nan")


def candles(close, high=None, low=None, symbol="EURUSD") -> Candles:
    """Candles with the given closes; high and low default to the close (a
    range of zero), the open to the previous close."""
    close = np.asarray(close, dtype=np.float64)
    high = close.copy() if high is None else np.asarray(high, dtype=np.float64)
    low = close.copy() if low is None else np.asarray(low, dtype=np.float64)
    open_ = np.concatenate([close[:1], close[:-1]])
    time = 1_700_000_000.0 + 60.0 * np.arange(len(close))
    return Candles(symbol, time, open_, high, low, close)


def random_walk(count: int, seed: int) -> Candles:
    """`count` plausible M1 EURUSD candles from a seeded random walk."""
    rng = np.random.default_rng(seed)
    close = np.round(1.1 + np.cumsum(rng.normal(0, 0.0003, count)), 5)
    open_ = np.concatenate([[1.1], close[:-1]])
    high = np.maximum(open_, close) + np.round(np.abs(rng.normal(0, 0.0001, count)), 5)
    low = np.minimum(open_, close) - np.round(np.abs(rng.normal(0, 0.0001, count)), 5)
    time = 1_700_000_000.0 + 60.0 * np.arange(count)
    return Candles("EURUSD", time, open_, high, low, close)


def window(c: Candles, end: int, length: int) -> Candles:
    """The `length` candles of `c` ending just before index `end`."""
    part = slice(end - length, end)
    return Candles(c.symbol, c.time[part], c.open[part], c.high[part], c.low[part], c.close[part])


def assert_series(actual, expected):
    """`actual` is NaN exactly where `expected` is, and approximately equal elsewhere."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert list(np.isnan(actual)) == list(np.isnan(expected))
    defined = ~np.isnan(expected)
    assert list(actual[defined]) == pytest.approx(list(expected[defined]), rel=1e-12, abs=1e-12)


def digits_of(value: Decimal) -> int:
    return -value.as_tuple().exponent


# -- indicators ---------------------------------------------------------------------

SERIES = [2.0, 4.0, 6.0, 10.0, 5.0, 3.0]


def test_sma_warm_up_then_exact_averages():
    assert_series(
        indicators.sma(SERIES, 3),
        [NAN, NAN, (2 + 4 + 6) / 3, (4 + 6 + 10) / 3, (6 + 10 + 5) / 3, (10 + 5 + 3) / 3],
    )


def test_sma_edge_periods():
    # Period 1 is the series itself; a period longer than the series is all NaN.
    assert_series(indicators.sma(SERIES, 1), SERIES)
    assert_series(indicators.sma(SERIES, 6), [NAN] * 5 + [30 / 6])
    assert np.isnan(indicators.sma(SERIES, 7)).all()
    assert len(indicators.sma(SERIES, 7)) == 6
    with pytest.raises(ValueError):
        indicators.sma(SERIES, 0)


def test_ema_seeded_with_simple_average_then_alpha_two_over_period_plus_one():
    # period 3: alpha = 2 / (3 + 1) = 0.5, seed = (2 + 4 + 6) / 3 = 4
    # [3] = 0.5 * 4 + 0.5 * 10 = 7
    # [4] = 0.5 * 7 + 0.5 * 5  = 6
    # [5] = 0.5 * 6 + 0.5 * 3  = 4.5
    assert_series(indicators.ema(SERIES, 3), [NAN, NAN, 4, 7, 6, 4.5])
    # period 4: alpha = 2 / 5 = 0.4, seed = (2 + 4 + 6 + 10) / 4 = 5.5
    # [4] = 0.6 * 5.5 + 0.4 * 5 = 3.3 + 2.0 = 5.3
    # [5] = 0.6 * 5.3 + 0.4 * 3 = 3.18 + 1.2 = 4.38
    assert_series(indicators.ema(SERIES, 4), [NAN, NAN, NAN, 5.5, 5.3, 4.38])


def test_wilder_seeded_with_simple_average_then_alpha_one_over_period():
    # period 3: alpha = 1/3, seed = 4
    # [3] = 4 * 2/3 + 10/3 = 18/3 = 6
    # [4] = 6 * 2/3 + 5/3 = 17/3
    # [5] = 17/3 * 2/3 + 3/3 = 34/9 + 9/9 = 43/9
    assert_series(indicators.wilder(SERIES, 3), [NAN, NAN, 4, 6, 17 / 3, 43 / 9])


def test_recursive_averages_short_input_and_bad_period():
    assert np.isnan(indicators.ema([1.0, 2.0], 3)).all()
    assert np.isnan(indicators.wilder([1.0, 2.0], 3)).all()
    assert len(indicators.ema([], 3)) == 0
    with pytest.raises(ValueError):
        indicators.ema(SERIES, 0)


@pytest.mark.parametrize("function, period", [(indicators.wilder, 0), (indicators.ema, -1)])
def test_recursive_averages_bad_period_is_value_error(function, period):
    # the period is checked before it is used to divide
    with pytest.raises(ValueError):
        function(SERIES, period)


def test_rsi_small_textbook_example():
    # closes   10   11   12   11   13   12   14   13
    # change        +1   +1   -1   +2   -1   +2   -1
    # gain           1    1    0    2    0    2    0
    # loss           0    0    1    0    1    0    1
    # Wilder, period 3 (avg = (prev * 2 + x) / 3), seeded with the first 3:
    #   avg gain: 2/3, (2/3*2 + 2)/3 = 10/9, (10/9*2 + 0)/3 = 20/27,
    #             (20/27*2 + 2)/3 = 94/81, (94/81*2 + 0)/3 = 188/243
    #   avg loss: 1/3, (1/3*2 + 0)/3 = 2/9,  (2/9*2 + 1)/3 = 13/27,
    #             (13/27*2 + 0)/3 = 26/81, (26/81*2 + 1)/3 = 133/243
    # RSI = 100 - 100 / (1 + G/L) = 100 * G / (G + L), first at index 3:
    closes = [10, 11, 12, 11, 13, 12, 14, 13]
    expected = [
        NAN,
        NAN,
        NAN,
        100 * 2 / (2 + 1),  # 66.67
        100 * 10 / (10 + 2),  # 83.33
        100 * 20 / (20 + 13),  # 60.61
        100 * 94 / (94 + 26),  # 78.33
        100 * 188 / (188 + 133),  # 58.57
    ]
    assert_series(indicators.rsi(closes, 3), expected)


def test_rsi_extremes_and_warm_up():
    # Nothing fell: 100. Nothing rose: 0.
    assert_series(indicators.rsi([1, 2, 3, 4, 5, 6], 3), [NAN, NAN, NAN, 100, 100, 100])
    assert_series(indicators.rsi([6, 5, 4, 3, 2, 1], 3), [NAN, NAN, NAN, 0, 0, 0])
    # It needs `period` changes, that is period + 1 closes.
    assert np.isnan(indicators.rsi([1, 2, 3], 3)).all()
    assert_series(indicators.rsi([1, 2, 3, 2], 3), [NAN, NAN, NAN, 100 * 2 / (2 + 1)])


def test_rsi_default_period_is_14():
    closes = 1.1 + 0.001 * np.sin(np.arange(40))
    values = indicators.rsi(closes)
    assert np.isnan(values[:14]).all()
    assert np.isfinite(values[14:]).all()
    assert ((values[14:] >= 0) & (values[14:] <= 100)).all()


def reference_recursion(values, period, alpha):
    """The textbook recursion, one value at a time: the seed is the mean of
    the first `period` values, then y = (1 - alpha) * y + alpha * x."""
    out = [NAN] * len(values)
    if len(values) < period:
        return out
    y = sum(values[:period]) / period
    out[period - 1] = y
    for i in range(period, len(values)):
        y = (1 - alpha) * y + alpha * values[i]
        out[i] = y
    return out


@pytest.mark.parametrize("period", [1, 2, 3, 14, 200])
def test_recursive_averages_on_a_long_series_equal_the_textbook_recursion(period):
    # long enough for many of the blocks the vectorised computation works in
    values = list(np.round(1.1 + np.cumsum(np.random.default_rng(3).normal(0, 0.0003, 20000)), 5))
    for function, alpha in ((indicators.wilder, 1 / period), (indicators.ema, 2 / (period + 1))):
        actual = function(values, period)
        expected = reference_recursion(values, period, alpha)
        assert list(np.isnan(actual)) == list(np.isnan(expected))
        defined = ~np.isnan(np.asarray(expected))
        assert list(actual[defined]) == pytest.approx(list(np.asarray(expected)[defined]), rel=1e-12)


def test_wilder_on_gains_with_long_runs_of_zeros():
    # RSI feeds Wilder's smoothing runs of zeros (no gain): the average decays
    # by (1 - 1/period) a bar, exactly as the recursion says
    values = [3.0, 0.0, 0.0] + [0.0] * 5000 + [6.0]
    assert_series(indicators.wilder(values, 3), reference_recursion(values, 3, 1 / 3))


# bar  high  low   close  previous close  true range
#  0   10    8     9      -               10 - 8 = 2
#  1   11    9.5   10.5   9               max(1.5, |11 - 9| = 2, |9.5 - 9| = 0.5) = 2
#  2   14    13    13.5   10.5 (gap up)   max(1, |14 - 10.5| = 3.5, |13 - 10.5| = 2.5) = 3.5
#  3   11    10    10.25  13.5 (gap down) max(1, |11 - 13.5| = 2.5, |10 - 13.5| = 3.5) = 3.5
#  4   10.75 10    10.5   10.25 (inside)  max(0.75, 0.5, 0.25) = 0.75
HIGH = [10, 11, 14, 11, 10.75]
LOW = [8, 9.5, 13, 10, 10]
CLOSE = [9, 10.5, 13.5, 10.25, 10.5]
TRUE_RANGES = [2, 2, 3.5, 3.5, 0.75]


def test_true_range_widens_to_previous_close():
    assert_series(indicators.true_range(HIGH, LOW, CLOSE), TRUE_RANGES)


def test_true_range_single_and_empty_bar():
    assert_series(indicators.true_range([5.0], [4.0], [4.5]), [1.0])
    assert len(indicators.true_range([], [], [])) == 0


def test_atr_is_wilder_smoothed_true_range():
    # period 3: first = (2 + 2 + 3.5) / 3 = 2.5
    # then (prev * 2 + tr) / 3: (2.5 * 2 + 3.5) / 3 = 8.5 / 3
    #                           (8.5/3 * 2 + 0.75) / 3 = (17/3 + 3/4) / 3 = 77/36
    assert_series(indicators.atr(HIGH, LOW, CLOSE, 3), [NAN, NAN, 2.5, 8.5 / 3, 77 / 36])
    # period 2: first = (2 + 2) / 2 = 2, then (2 + 3.5)/2 = 2.75,
    # (2.75 + 3.5)/2 = 3.125, (3.125 + 0.75)/2 = 1.9375
    assert_series(indicators.atr(HIGH, LOW, CLOSE, 2), [NAN, 2, 2.75, 3.125, 1.9375])


def test_bollinger_bands_use_the_population_standard_deviation():
    # SERIES = 2, 4, 6, 10, 5, 3; period 3, width 2
    # window 2 4 6:  mean 4,    deviations -2 0 2:           variance (4 + 0 + 4) / 3 = 8/3
    # window 4 6 10: mean 20/3, deviations -8/3 -2/3 10/3:   variance (64 + 4 + 100) / 9 / 3 = 56/9
    # window 6 10 5: mean 7,    deviations -1 3 -2:          variance (1 + 9 + 4) / 3 = 14/3
    # window 10 5 3: mean 6,    deviations 4 -1 -3:          variance (16 + 1 + 9) / 3 = 26/3
    # (divided by 3, the period: the population deviation; the sample one divides by 2)
    means = [4, 20 / 3, 7, 6]
    deviations = [np.sqrt(8 / 3), np.sqrt(56 / 9), np.sqrt(14 / 3), np.sqrt(26 / 3)]
    middle, upper, lower = indicators.bollinger(SERIES, 3, 2)
    assert_series(middle, [NAN, NAN] + means)
    assert_series(upper, [NAN, NAN] + [m + 2 * d for m, d in zip(means, deviations)])
    assert_series(lower, [NAN, NAN] + [m - 2 * d for m, d in zip(means, deviations)])
    # width 1; too short a series is all NaN; a flat one has bands on the mean
    assert_series(indicators.bollinger(SERIES, 3, 1)[1], [NAN, NAN] + [m + d for m, d in zip(means, deviations)])
    assert np.isnan(indicators.bollinger([1.0, 2.0], 3, 2)[1]).all()
    _, upper, lower = indicators.bollinger([1.1] * 5, 3, 2)
    assert_series(upper, [NAN, NAN, 1.1, 1.1, 1.1])
    with pytest.raises(ValueError):
        indicators.bollinger(SERIES, 0)


# -- Bollinger breakout --------------------------------------------------------------

# closes 1 2 1 2 1 5, period 3, width 1:
#   bar 4, window 1 2 1: mean 4/3, variance (1/9 + 4/9 + 1/9) / 3 = 2/9, deviation 0.4714:
#          upper 4/3 + 0.4714 = 1.8047; the close 1 is inside
#   bar 5, window 2 1 5: mean 8/3, variance (4/9 + 25/9 + 49/9) / 3 = 78/27, deviation 1.6997:
#          upper 8/3 + 1.6997 = 4.3663; the close 5 is above: a breakout up
BREAKOUT_UP = [1, 2, 1, 2, 1, 5]
# mirrored: 5 4 5 4 5 1, bar 4 lower 14/3 - 0.4714 = 4.1953 (close 5 inside),
# bar 5 window 4 5 1 lower 10/3 - 1.6997 = 1.6337, the close 1 is below
BREAKOUT_DOWN = [5, 4, 5, 4, 5, 1]


def bollinger(**kwargs) -> BollingerBreakout:
    return BollingerBreakout(**{"period": 3, "width": 1.0, "stops": FIXED, **kwargs})


def test_bollinger_breakout_buy_and_sell_on_the_last_bar():
    assert bollinger().evaluate(candles(BREAKOUT_UP), EURUSD) == Signal(BUY, Decimal("0.00200"), Decimal("0.00400"))
    assert bollinger().evaluate(candles(BREAKOUT_DOWN), EURUSD) == Signal(SELL, Decimal("0.00200"), Decimal("0.00400"))


def test_bollinger_breakout_only_on_the_bar_that_crosses():
    # one bar after the breakout, further up, window 1 5 20:
    # mean 26/3, deviations -23/3 -11/3 34/3, variance (529 + 121 + 1156) / 9 / 3 = 1806/27,
    # deviation 8.178, upper 26/3 + 8.178 = 16.85 < 20. Above the band on this bar
    # and on the one before (5 > 4.3663): no new breakout.
    assert bollinger().evaluate(candles(BREAKOUT_UP + [20]), EURUSD) is None
    # a close that stays inside the band: 1 2 1 2 1 2
    assert bollinger().evaluate(candles([1, 2, 1, 2, 1, 2]), EURUSD) is None


def test_bollinger_breakout_needs_the_width():
    # width 2: the upper band of bar 5 is 8/3 + 2 * 1.6997 = 6.066 > 5, no breakout
    assert bollinger(width=2).evaluate(candles(BREAKOUT_UP), EURUSD) is None


def test_bollinger_breakout_flat_market_and_too_few_candles():
    assert bollinger().evaluate(candles([1.1] * 30), EURUSD) is None
    assert bollinger().evaluate(candles(BREAKOUT_UP[-3:]), EURUSD) is None  # period + 1 closes are needed


def test_bollinger_breakout_with_atr_stops():
    # ranges of 20 points, then the breakout bar: the ATR(3) stops of the same candles
    close = np.array(BREAKOUT_UP, dtype=float) * 0.001 + 1.1
    c = candles(close, close + 0.0001, close - 0.0001)
    signal = bollinger(stops=AtrStops(period=3)).evaluate(c, EURUSD)
    stop, take = AtrStops(period=3).distances(c, EURUSD)
    assert signal == Signal(BUY, stop, take)


def test_bollinger_breakout_rejects_bad_parameters():
    with pytest.raises(ValueError, match="period >= 2"):
        BollingerBreakout(period=1)
    with pytest.raises(ValueError, match="width > 0"):
        BollingerBreakout(width=0)


# -- stops given as prices, and signals built from given stops --------------------------


def test_levels_from_distances_are_widened_to_the_stops_level():
    # floor: (stops level 5 + spread 10) points = 0.00015
    assert Signal(BUY, Decimal("0.00100"), Decimal("0.00010")).levels(Decimal("1.10000"), EURUSD) == (
        Decimal("1.09900"),
        Decimal("1.10015"),
    )
    assert Signal(SELL, Decimal("0.00100"), Decimal("0.00200")).levels(Decimal("1.10000"), EURUSD) == (
        Decimal("1.10100"),
        Decimal("1.09800"),
    )


def test_levels_from_prices_are_rounded_and_checked_against_the_entry():
    buy = Signal(BUY, stop_price=Decimal("1.0950004"), take_price=Decimal("1.11"))
    assert buy.levels(Decimal("1.10000"), EURUSD) == (Decimal("1.09500"), Decimal("1.11000"))
    sell = Signal(SELL, stop_price=Decimal("1.11"), take_distance=Decimal("0.00300"))
    assert sell.levels(Decimal("1.10000"), EURUSD) == (Decimal("1.11000"), Decimal("1.09700"))
    # on the wrong side, or closer than the stops level plus spread (0.00015)
    for signal, message in (
        (Signal(BUY, stop_price=Decimal("1.10100"), take_distance=Decimal(1)), "stop loss 1.10100 is not below the entry price 1.10000 by at least 0.00015"),
        (Signal(BUY, stop_price=Decimal("1.09990"), take_distance=Decimal(1)), "stop loss 1.09990 is not below"),
        (Signal(BUY, stop_distance=Decimal(1), take_price=Decimal("1.09")), "take profit 1.09000 is not above"),
        (Signal(SELL, stop_price=Decimal("1.0990"), take_distance=Decimal(1)), "stop loss 1.09900 is not above"),
        (Signal(SELL, stop_distance=Decimal(1), take_price=Decimal("1.10010")), "take profit 1.10010 is not below"),
    ):
        with pytest.raises(StopsRejected, match=message):
            signal.levels(Decimal("1.10000"), EURUSD)
    # exactly the stops level away is enough
    at_floor = Signal(BUY, stop_price=Decimal("1.09985"), take_price=Decimal("1.10015"))
    assert at_floor.levels(Decimal("1.10000"), EURUSD) == (Decimal("1.09985"), Decimal("1.10015"))


def test_a_signal_has_each_stop_as_a_distance_or_a_price():
    with pytest.raises(ValueError, match="stop loss is a distance or a price"):
        Signal(BUY, take_distance=Decimal(1))
    with pytest.raises(ValueError, match="take profit is a distance or a price"):
        Signal(BUY, Decimal(1), Decimal(1), take_price=Decimal(2))
    with pytest.raises(ValueError, match="more than 0"):
        Signal(BUY, Decimal(0), Decimal(1))


def test_signal_with_stops_takes_the_missing_ones_from_the_helper():
    c = steady_range(20)  # ATR(3) 20 points: stops 30 and 60 points
    atr = AtrStops(period=3)
    assert signal_with_stops(BUY, atr, c, EURUSD) == Signal(BUY, Decimal("0.00030"), Decimal("0.00060"))
    assert signal_with_stops(SELL, atr, c, EURUSD, stop_price=Decimal("1.2")) == Signal(
        SELL, stop_price=Decimal("1.2"), take_distance=Decimal("0.00060")
    )
    # given distances are rounded to the point and kept clear of the stops level
    assert signal_with_stops(BUY, atr, None, EURUSD, stop_distance=Decimal("0.000504"), take_distance=Decimal("0.0000001")) == Signal(
        BUY, Decimal("0.00050"), Decimal("0.00016")
    )
    # the helper is needed but has no stops yet (too few candles): no signal
    assert signal_with_stops(BUY, atr, steady_range(20, count=2), EURUSD, stop_price=Decimal(1)) is None


# -- moving average cross -----------------------------------------------------------

FIXED = FixedStops(200, 400)


def ma_cross(**kwargs) -> MovingAverageCross:
    return MovingAverageCross(fast=2, slow=4, stops=FIXED, **kwargs)


def test_ma_cross_buy_on_the_last_bar():
    # fast SMA(2) / slow SMA(4) on the last two bars:
    #   bar 4: (10 + 9)/2 = 9.5   <= (10 + 10 + 10 + 9)/4 = 9.75
    #   bar 5: (9 + 12)/2 = 10.5  >  (10 + 10 + 9 + 12)/4 = 10.25
    signal = ma_cross().evaluate(candles([10, 10, 10, 10, 9, 12]), EURUSD)
    assert signal == Signal(BUY, Decimal("0.00200"), Decimal("0.00400"))


def test_ma_cross_sell_on_the_last_bar():
    #   bar 4: (10 + 11)/2 = 10.5 >= (10 + 10 + 10 + 11)/4 = 10.25
    #   bar 5: (11 + 8)/2 = 9.5   <  (10 + 10 + 11 + 8)/4 = 9.75
    signal = ma_cross().evaluate(candles([10, 10, 10, 10, 11, 8]), EURUSD)
    assert signal == Signal(SELL, Decimal("0.00200"), Decimal("0.00400"))


def test_ma_cross_from_equal_averages_counts():
    # bar 4: fast 10 == slow 10; bar 5: fast 11 > slow 10.5
    assert ma_cross().evaluate(candles([10, 10, 10, 10, 10, 12]), EURUSD).side == BUY
    # bar 4: fast 10 == slow 10; bar 5: fast 9 < slow 9.5
    assert ma_cross().evaluate(candles([10, 10, 10, 10, 10, 8]), EURUSD).side == SELL


def test_ma_cross_one_bar_earlier_is_no_signal():
    closes = [10, 10, 10, 9, 12, 13]
    # bar 3: fast 9.5 <= slow 9.75; bar 4: fast 10.5 > slow 10.25 -- the cross;
    # bar 5: fast 12.5 > slow 11 -- still above, no new cross.
    assert ma_cross().evaluate(candles(closes), EURUSD) is None
    # The same candles one bar earlier do end on the cross (slow + 1 = 5 candles
    # is just enough).
    assert ma_cross().evaluate(candles(closes[:5]), EURUSD).side == BUY


def test_ma_cross_no_cross_and_flat_market():
    # Steadily rising: fast stays above slow.
    assert ma_cross().evaluate(candles([1, 2, 3, 4, 5, 6, 7]), EURUSD) is None
    # Flat: the averages stay equal.
    assert ma_cross().evaluate(candles([10] * 8), EURUSD) is None


def test_ma_cross_too_few_candles():
    assert ma_cross().evaluate(candles([10, 10, 9, 12]), EURUSD) is None
    assert ma_cross().evaluate(candles([12]), EURUSD) is None
    assert ma_cross().evaluate(candles([]), EURUSD) is None


def test_ma_cross_needs_a_defined_atr_for_its_stops():
    # The default stops (ATR 14) are undefined on 6 candles: no signal though
    # the averages cross.
    strategy = MovingAverageCross(fast=2, slow=4)
    assert strategy.evaluate(candles([10, 10, 10, 10, 9, 12]), EURUSD) is None
    # ATR 3 is defined there: a signal.
    assert MovingAverageCross(fast=2, slow=4, stops=AtrStops(period=3)).evaluate(
        candles([10, 10, 10, 10, 9, 12]), EURUSD
    ).side == BUY


def test_ma_cross_with_atr_stops():
    close = [10, 10, 10, 10, 9, 12]
    high = [c + 0.5 for c in close]
    low = [c - 0.5 for c in close]
    # true ranges: 1, 1, 1, 1, max(1, |9.5-10|, |8.5-10|) = 1.5,
    #              max(1, |12.5-9| = 3.5, |11.5-9| = 2.5) = 3.5
    # ATR(3): (1+1+1)/3 = 1, (1*2+1)/3 = 1, (1*2+1.5)/3 = 3.5/3, (3.5/3*2+3.5)/3 = 17.5/9
    # stop 1.5 * 17.5/9 = 2.91666.. -> 2.92; take 3 * 17.5/9 = 5.8333.. -> 5.83
    strategy = MovingAverageCross(fast=2, slow=4, stops=AtrStops(period=3))
    signal = strategy.evaluate(candles(close, high, low), INDEX)
    assert signal == Signal(BUY, Decimal("2.92"), Decimal("5.83"))


def test_ma_cross_flat_tail_is_no_signal():
    # The last four closes are equal, so on the last two bars both SMA(2) and
    # SMA(3) are exactly 1.10033 and nothing crossed (an SMA from running sums
    # used to leave one ulp of difference here, which read as a cross: a SELL).
    strategy = MovingAverageCross(fast=2, slow=3, stops=FIXED)
    closes = [1.10272, 1.08898, 1.10033, 1.10033, 1.10033, 1.10033]
    assert strategy.evaluate(candles(closes), EURUSD) is None


def test_ma_cross_rejects_bad_periods():
    for fast, slow in ((4, 4), (5, 4), (0, 4)):
        with pytest.raises(ValueError, match="fast < slow"):
            MovingAverageCross(fast=fast, slow=slow)


# -- RSI reversal -------------------------------------------------------------------


def rsi_reversal(**kwargs) -> RsiReversal:
    return RsiReversal(period=3, low=30, high=70, stops=FIXED, **kwargs)


def test_rsi_reversal_buy_when_leaving_oversold():
    # closes 10 9 8 7 6 7.5: changes -1 -1 -1 -1 +1.5
    # avg gain: 0, 0, (0*2 + 1.5)/3 = 0.5; avg loss: 1, 1, (1*2 + 0)/3 = 2/3
    # RSI at bar 4: 0 (< 30); at bar 5: 100 * 0.5 / (0.5 + 2/3) = 300/7 = 42.86 (>= 30)
    signal = rsi_reversal().evaluate(candles([10, 9, 8, 7, 6, 7.5]), EURUSD)
    assert signal == Signal(BUY, Decimal("0.00200"), Decimal("0.00400"))


def test_rsi_reversal_sell_when_leaving_overbought():
    # The mirror image: RSI 100 (> 70), then 100 - 300/7 = 57.14 (<= 70).
    signal = rsi_reversal().evaluate(candles([10, 11, 12, 13, 14, 12.5]), EURUSD)
    assert signal == Signal(SELL, Decimal("0.00200"), Decimal("0.00400"))


def test_rsi_reversal_sell_from_the_textbook_example():
    # RSI 83.33 -> 60.61 falls below 70 at bar 5 (not the last bar: None), and
    # 78.33 -> 58.57 does so again at bar 7 (the last bar: SELL).
    closes = [10, 11, 12, 11, 13, 12, 14, 13]
    assert rsi_reversal().evaluate(candles(closes), EURUSD).side == SELL
    assert rsi_reversal().evaluate(candles(closes[:6]), EURUSD).side == SELL
    assert rsi_reversal().evaluate(candles(closes[:5]), EURUSD) is None


def test_rsi_reversal_no_signal():
    strategy = rsi_reversal()
    # Still oversold: avg gain 0.2/3, avg loss 2/3 -> RSI 100 * 0.2 / 2.2 = 9.09.
    assert strategy.evaluate(candles([10, 9, 8, 7, 6, 6.2]), EURUSD) is None
    # Left oversold one bar earlier: RSI 0 -> 42.86 at bar 4, then
    # avg gain (0.5*2 + 1)/3 = 2/3, avg loss (2/3*2)/3 = 4/9 -> RSI 60 at bar 5.
    assert strategy.evaluate(candles([10, 9, 8, 7, 8.5, 9.5]), EURUSD) is None
    assert strategy.evaluate(candles([10, 9, 8, 7, 8.5]), EURUSD).side == BUY
    # Between the levels: 66.67, 83.33, 60.61, 78.33 (see the RSI example above).
    assert strategy.evaluate(candles([10, 11, 12, 11, 13, 12, 14]), EURUSD) is None
    # Overbought and staying there.
    assert strategy.evaluate(candles([10, 11, 12, 13, 14, 15]), EURUSD) is None


def test_rsi_reversal_needs_two_rsi_values():
    # period 3: the first RSI is at index 3, so 4 candles give only one.
    assert rsi_reversal().evaluate(candles([10, 9, 8, 7]), EURUSD) is None
    assert rsi_reversal().evaluate(candles([10]), EURUSD) is None
    assert rsi_reversal().evaluate(candles([]), EURUSD) is None


def test_rsi_reversal_levels_are_parameters():
    # RSI 0 -> 42.86: leaving low=30 but not low=50.
    closes = [10, 9, 8, 7, 6, 7.5]
    assert RsiReversal(period=3, low=40, high=70, stops=FIXED).evaluate(candles(closes), EURUSD).side == BUY
    assert RsiReversal(period=3, low=50, high=70, stops=FIXED).evaluate(candles(closes), EURUSD) is None


def test_rsi_reversal_rejects_bad_parameters():
    for kwargs in ({"period": 1}, {"low": 0}, {"low": 70, "high": 70}, {"low": 80, "high": 70}, {"high": 100}):
        with pytest.raises(ValueError, match="rsi_reversal needs"):
            RsiReversal(**kwargs)


# -- stops --------------------------------------------------------------------------


def steady_range(points: int, count: int = 20) -> Candles:
    """EURUSD candles each `points` points from low to high, closing in the
    middle of the same range: every true range is `points` points."""
    low = np.full(count, 1.10000)
    high = low + points * 0.00001
    close = low + points * 0.000005
    return candles(close, high, low)


def test_atr_stops_are_multiples_of_atr_rounded_to_the_point():
    # ATR = 20 points = 0.00020; stop 1.5 * 0.0002 = 0.00030, take 3 * 0.0002 = 0.00060
    stop, take = AtrStops(period=3).distances(steady_range(20), EURUSD)
    assert (stop, take) == (Decimal("0.00030"), Decimal("0.00060"))
    assert digits_of(stop) == digits_of(take) == 5
    # ATR = 37 points, multiples 2 and 1.7: stop 74 points = 0.00074,
    # take 62.9 points -> rounded to 63 points = 0.00063
    stop, take = AtrStops(period=3, stop_multiple=2, take_multiple=1.7).distances(steady_range(37), EURUSD)
    assert (stop, take) == (Decimal("0.00074"), Decimal("0.00063"))


def test_atr_stops_rounding_on_a_two_digit_symbol():
    # ATR(3) of HIGH/LOW/CLOSE above is 77/36 = 2.13888..
    # stop 1.5 * 77/36 = 3.2083.. -> 3.21; take 3 * 77/36 = 6.41666.. -> 6.42
    c = candles(CLOSE, HIGH, LOW, symbol="US500")
    stop, take = AtrStops(period=3).distances(c, INDEX)
    assert (stop, take) == (Decimal("3.21"), Decimal("6.42"))
    assert digits_of(stop) == digits_of(take) == 2


def test_atr_stops_tiny_atr_pushed_to_least_distance():
    # ATR = 2 points: stop 3 points, take 6 points, both under the least
    # (stops level 5 + spread 10 + 1) * 0.00001 = 0.00016.
    stop, take = AtrStops(period=3).distances(steady_range(2), EURUSD)
    assert (stop, take) == (Decimal("0.00016"), Decimal("0.00016"))
    assert digits_of(stop) == digits_of(take) == 5
    # ATR = 8 points: stop 12 points is pushed out, take 24 points is not.
    stop, take = AtrStops(period=3).distances(steady_range(8), EURUSD)
    assert (stop, take) == (Decimal("0.00016"), Decimal("0.00024"))


def test_atr_stops_undefined_or_zero_atr():
    # Fewer candles than the period, or no range at all: no stops.
    assert AtrStops(period=3).distances(steady_range(20, count=2), EURUSD) is None
    assert AtrStops(period=3).distances(candles([1.1] * 10), EURUSD) is None


def test_fixed_stops_are_points_times_point():
    stop, take = FixedStops(150, 300).distances(steady_range(20), EURUSD)
    assert (stop, take) == (Decimal("0.00150"), Decimal("0.00300"))
    assert digits_of(stop) == digits_of(take) == 5
    stop, take = FixedStops(150, 300).distances(candles(CLOSE, HIGH, LOW), INDEX)
    assert (stop, take) == (Decimal("1.50"), Decimal("3.00"))
    assert digits_of(stop) == digits_of(take) == 2
    # The default: 200 and 400 points.
    assert FixedStops().distances(candles([]), EURUSD) == (Decimal("0.00200"), Decimal("0.00400"))


def test_fixed_stops_pushed_to_least_distance():
    # 3 points < 16 points; 16 points is already enough.
    stop, take = FixedStops(3, 16).distances(candles([]), EURUSD)
    assert (stop, take) == (Decimal("0.00016"), Decimal("0.00016"))
    assert digits_of(stop) == 5


# -- by name ------------------------------------------------------------------------


def test_bollinger_breakout_by_name():
    assert strategy_from_name("bollinger_breakout") == BollingerBreakout(period=20, width=2.0, stops=AtrStops())
    assert strategy_from_name("bollinger_breakout:period=10,width=1.5,stops=fixed,sl_points=150") == BollingerBreakout(
        period=10, width=1.5, stops=FixedStops(150, 400)
    )
    assert strategy_from_name("bollinger_breakout").name == "bollinger_breakout"
    with pytest.raises(ValueError, match="width must be a finite number"):
        strategy_from_name("bollinger_breakout:width=inf")
    with pytest.raises(ValueError, match="unknown parameter 'fast'"):
        strategy_from_name("bollinger_breakout:fast=3")


def test_default_strategy_is_known():
    assert DEFAULT_STRATEGY in STRATEGY_NAMES
    assert set(STRATEGY_NAMES) == {"ma_cross", "rsi_reversal", "bollinger_breakout", "http"}
    assert strategy_from_name(DEFAULT_STRATEGY).name == DEFAULT_STRATEGY


def test_ma_cross_by_name():
    strategy = strategy_from_name("ma_cross")
    default_stops = AtrStops(period=14, stop_multiple=1.5, take_multiple=3.0)
    assert strategy == MovingAverageCross(fast=5, slow=20, stops=default_stops)
    assert (strategy.fast, strategy.slow) == (5, 20)
    assert strategy_from_name("ma_cross:fast=8,slow=21") == MovingAverageCross(fast=8, slow=21)
    # Spaces around items, keys and values are allowed; an empty item is skipped.
    assert strategy_from_name("  ma_cross: fast = 8 , slow=21, ") == MovingAverageCross(fast=8, slow=21)


def test_rsi_reversal_by_name():
    strategy = strategy_from_name("rsi_reversal:period=10,low=25,high=75")
    assert strategy == RsiReversal(period=10, low=25.0, high=75.0, stops=AtrStops())
    assert strategy.name == "rsi_reversal"
    assert strategy_from_name("rsi_reversal") == RsiReversal(period=14, low=30.0, high=70.0)
    assert strategy_from_name("rsi_reversal:low=22.5").low == 22.5


def test_stops_by_name():
    strategy = strategy_from_name("ma_cross:stops=fixed,sl_points=150,tp_points=300")
    assert strategy.stops == FixedStops(150, 300)
    assert strategy_from_name("ma_cross:stops=fixed").stops == FixedStops(200, 400)
    strategy = strategy_from_name("rsi_reversal:stops=atr,atr=10,sl_atr=2,tp_atr=4.5")
    assert strategy.stops == AtrStops(period=10, stop_multiple=2.0, take_multiple=4.5)
    assert strategy_from_name("ma_cross:sl_atr=1").stops == AtrStops(period=14, stop_multiple=1.0, take_multiple=3.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("astrology", r"unknown strategy 'astrology' \(known: ma_cross, rsi_reversal, bollinger_breakout, http\)"),
        ("", "unknown strategy ''"),
        ("MA_CROSS", "unknown strategy 'MA_CROSS'"),
        ("ma_cross:speed=3", r"unknown parameter 'speed' in 'ma_cross:speed=3' \(known: fast, slow, stops, atr"),
        ("ma_cross:period=3", "unknown parameter 'period'"),
        ("ma_cross:stops=fixed,sl_atr=2", "unknown parameter 'sl_atr'"),
        ("ma_cross:stops=atr,sl_points=2", "unknown parameter 'sl_points'"),
        ("ma_cross:stops=magic", "unknown stops 'magic'"),
        ("ma_cross:fast", "malformed parameter 'fast' in 'ma_cross:fast': use key=value"),
        ("ma_cross:fast=", "malformed parameter 'fast='"),
        ("ma_cross:=8", "malformed parameter '=8'"),
        ("ma_cross:fast=abc", "fast must be a whole number in 'ma_cross:fast=abc'"),
        ("ma_cross:fast=2.5", "fast must be a whole number"),
        ("rsi_reversal:low=abc", "low must be a finite number in 'rsi_reversal:low=abc'"),
        ("ma_cross:sl_atr=x", "sl_atr must be a finite number"),
        ("ma_cross:stops=fixed,sl_points=1.5", "sl_points must be a whole number"),
        ("ma_cross:fast=20,slow=20", "fast < slow"),
        ("ma_cross:fast=21,slow=8", "fast < slow"),
        ("ma_cross:fast=0", "fast < slow"),
        ("rsi_reversal:low=80,high=70", "low < high"),
        ("rsi_reversal:period=1", "period >= 2"),
        ("ma_cross:sl_atr=0", r"must be more than 0 in 'ma_cross:sl_atr=0'"),
        ("ma_cross:sl_atr=-1.5", "must be more than 0"),
        ("ma_cross:tp_atr=0", "must be more than 0"),
        ("ma_cross:atr=0", "must be more than 0"),
        ("ma_cross:stops=fixed,sl_points=0", "must be more than 0"),
        ("ma_cross:stops=fixed,tp_points=-5", "must be more than 0"),
    ],
)
def test_strategy_from_name_errors(text, message):
    with pytest.raises(ValueError, match=message):
        strategy_from_name(text)


@pytest.mark.parametrize("text", ["ma_cross:sl_atr=nan", "ma_cross:tp_atr=inf"])
def test_non_finite_atr_multiples_are_refused(text):
    # NaN passes a "> 0" check, so finiteness is checked on its own
    with pytest.raises(ValueError):
        strategy_from_name(text)


# -- candles_needed -----------------------------------------------------------------


def test_candles_needed_values():
    # max(slow + 2, 4 * ATR period)
    assert MovingAverageCross().candles_needed == max(20 + 2, 4 * 14) == 56
    assert MovingAverageCross(fast=5, slow=60).candles_needed == 62
    assert MovingAverageCross(fast=2, slow=4, stops=FIXED).candles_needed == 6
    # max(4 * period + 2, 4 * ATR period)
    assert RsiReversal().candles_needed == 4 * 14 + 2 == 58
    assert RsiReversal(period=3, stops=AtrStops(period=20)).candles_needed == 80
    assert RsiReversal(period=3, stops=FIXED).candles_needed == 14
    # max(period + 1, 4 * ATR period)
    assert BollingerBreakout().candles_needed == max(20 + 1, 4 * 14) == 56
    assert BollingerBreakout(period=80).candles_needed == 81
    assert BollingerBreakout(period=5, stops=FIXED).candles_needed == 6


@pytest.mark.parametrize(
    "text",
    [
        "ma_cross",
        "ma_cross:fast=8,slow=21,atr=5",
        "ma_cross:fast=3,slow=70",
        "ma_cross:stops=fixed",
        "rsi_reversal",
        "rsi_reversal:period=5,atr=30",
        "rsi_reversal:stops=fixed,period=3",
        "bollinger_breakout",
        "bollinger_breakout:period=10,width=1.5,stops=fixed",
    ],
)
def test_candles_needed_is_enough(text):
    strategy = strategy_from_name(text)
    needed = strategy.candles_needed
    walk = random_walk(3000, seed=7)
    sides = set()
    for end in range(needed, len(walk) + 1):
        c = window(walk, end, needed)
        assert len(c) == needed
        # What the strategy reads is defined on exactly `needed` candles...
        if isinstance(strategy, MovingAverageCross):
            assert np.isfinite(indicators.sma(c.close, strategy.slow)[-2])
        elif isinstance(strategy, BollingerBreakout):
            assert np.isfinite(indicators.bollinger(c.close, strategy.period, strategy.width)[1][-2])
        else:
            assert np.isfinite(indicators.rsi(c.close, strategy.period)[-2])
        if isinstance(strategy.stops, AtrStops):
            assert np.isfinite(indicators.atr(c.high, c.low, c.close, strategy.stops.period)[-1])
        # ...and it evaluates without error, now and then giving a signal.
        signal = strategy.evaluate(c, EURUSD)
        if signal is not None:
            assert signal.stop_distance >= Decimal("0.00016")
            assert digits_of(signal.stop_distance) == digits_of(signal.take_distance) == 5
            sides.add(signal.side)
    assert sides == {BUY, SELL}

"""
Where the paper market's prices come from: a seeded random walk per symbol,
one tick a simulated second, building M1 candles; or given M1 bars replayed.
"""

import collections
from typing import Optional

import numpy as np

from tradebot.broker import Candles, SymbolSpec
from tradebot.brokers.paper.catalog import MAX_BARS, WARM_UP_BARS


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

"""
A million M1 bars through the backtester: the time to read them from CSV and
the time to replay them (target: under 30 s for the replay on a 2-core box).

Makes a seeded random-walk EURUSD series (a few pips a bar), writes it as a
plain CSV file in a temporary folder, reads it back with
`tradebot.backtest.bars.read_bars`, and backtests it with the default strategy
(ma_cross, ATR stops) and the shipped `default` plan, printing each time and
the trade count.

    .venv/bin/python bench/backtest.py [--bars 1000000] [--strategy ma_cross] [--plan default]
"""

import argparse
import os
import tempfile
import time
from decimal import Decimal

import numpy as np

from tradebot.backtest.bars import read_bars
from tradebot.backtest.engine import backtest
from tradebot.brokers.paper import CATALOG
from tradebot.plans.engine import PlanEngine
from tradebot.plans.files import load_plan
from tradebot.signals.names import strategy_from_name


def write_series(path, count, seed=2024):
    """`count` M1 bars of a seeded random walk, as time,open,high,low,close,volume."""
    rng = np.random.default_rng(seed)
    close = np.round(1.085 * np.exp(np.cumsum(rng.standard_normal(count) * 2.5e-4)), 5)
    open_ = np.r_[1.085, close[:-1]]
    high = np.round(np.maximum(open_, close) + rng.random(count) * 2e-4, 5)
    low = np.round(np.minimum(open_, close) - rng.random(count) * 2e-4, 5)
    times = 1_577_836_800 + 60 * np.arange(count, dtype=np.int64)
    table = np.column_stack([times, open_, high, low, close, np.ones(count)])
    with open(path, "w", encoding="utf-8") as f:
        f.write("time,open,high,low,close,volume\n")
        np.savetxt(f, table, fmt=["%d", "%.5f", "%.5f", "%.5f", "%.5f", "%d"], delimiter=",")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--strategy", default="ma_cross")
    parser.add_argument("--plan", default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bars.csv")
        write_series(path, args.bars)
        started = time.perf_counter()
        bars = read_bars(path, "EURUSD")
        read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = backtest(
        bars, strategy_from_name(args.strategy), PlanEngine(load_plan(args.plan)), CATALOG["EURUSD"], Decimal(10000)
    )
    replay_seconds = time.perf_counter() - started
    print(f"bars: {len(bars)}  trades: {len(result.trades)}  final balance: {result.balance}")
    print(f"read the CSV: {read_seconds:.1f} s")
    print(f"backtest:     {replay_seconds:.1f} s  ({replay_seconds / len(bars) * 1e6:.1f} us a bar)")
    print(f"total:        {read_seconds + replay_seconds:.1f} s (target: under 30 s)")


if __name__ == "__main__":
    main()

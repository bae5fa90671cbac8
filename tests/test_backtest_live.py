"""
The backtest and live paper trading make the same trades on the same bars: a
real `AccountSession` trades a paper market that replays the bars (driven by a
Clock), and the backtester replays them too; their trades must agree.
"""

from decimal import Decimal

import numpy as np
import pytest
from twisted.internet.task import Clock

from tradebot.backtest.bars import bars_from_arrays
from tradebot.backtest.engine import backtest
from tradebot.brokers.paper import CATALOG, WARM_UP_BARS, BarReplayMarket, PaperBackend
from tradebot.loops import AccountSession
from tradebot.plans.engine import PlanEngine
from tradebot.plans.files import load_plan
from tradebot.signals.names import strategy_from_name
from tradebot.store.tokens import hash_token
from tradebot.trading.market import MarketData

SIGNAL_INTERVAL = 60  # one check a bar, in its first second, as the backtest does
MONITOR_INTERVAL = 5
STRATEGIES = [
    "ma_cross:fast=3,slow=8,stops=fixed,sl_points=150,tp_points=250",
    "bollinger_breakout:period=10,width=1.5,stops=atr,atr=5,sl_atr=3,tp_atr=5",
]


def replay_bars(n, seed):
    """M1 EURUSD bars, a few pips each, on whole minutes; a bar's open is
    the previous close, so the replayed bid never jumps inside a bar."""
    rng = np.random.default_rng(seed)
    close = np.round(1.0850 + np.cumsum(rng.standard_normal(n)) * 0.0003, 5)
    open_ = np.r_[1.0850, close[:-1]]
    high = np.round(np.maximum(open_, close) + rng.random(n) * 0.0002, 5)
    low = np.round(np.minimum(open_, close) - rng.random(n) * 0.0002, 5)
    return bars_from_arrays("EURUSD", 1_704_067_200 + 60.0 * np.arange(n), open_, high, low, close)


def live_trades(store, bars, strategy_name):
    clock = Clock()
    market = BarReplayMarket(clock, "EURUSD", bars)
    backend = PaperBackend(reactor=clock, market=market)
    backend.start()
    # two open trades allowed, one symbol: the signal check keeps its
    # once-a-bar rhythm rather than restarting when a trade closes
    account = store.add_account("replay", ("EURUSD",), Decimal("10000"), "fixed", 2, True, hash_token("t")).result
    session = AccountSession(
        account,
        store,
        backend.broker_for("replay", Decimal("10000")),
        MarketData(clock),
        strategy_from_name(strategy_name),
        load_plan,
        clock,
        SIGNAL_INTERVAL,
        MONITOR_INTERVAL,
    )
    session.startService()
    assert session.ready.called
    bars_to_trade = len(bars) - WARM_UP_BARS - 1
    for _ in range(bars_to_trade * 60 // MONITOR_INTERVAL):
        clock.advance(MONITOR_INTERVAL)
    session.stopService()
    return [t for _, t in store.trades("replay").result], market


@pytest.mark.parametrize("strategy_name", STRATEGIES, ids=["ma_cross", "bollinger"])
def test_backtest_and_live_paper_trading_make_the_same_trades(inline_store, strategy_name):
    bars = replay_bars(WARM_UP_BARS + 700, seed=5)
    live, market = live_trades(inline_store, bars, strategy_name)
    # the live session starts trading on bar WARM_UP_BARS, with that much
    # history: the backtest starts its first window there too
    strategy = strategy_from_name(strategy_name)
    first = WARM_UP_BARS - strategy.candles_needed
    tested = backtest(
        bars_from_arrays("EURUSD", *(a[first:] for a in (bars.time, bars.open, bars.high, bars.low, bars.close))),
        strategy,
        PlanEngine(load_plan("fixed")),
        CATALOG["EURUSD"],
        Decimal("10000"),
    )
    closed = [t for t in live if t.status == "closed"]
    assert len(closed) >= 8
    # the live session stops a bar before the data ends; the backtest closes
    # what is still open on the last bar
    expected = [t for t in tested.trades if t.reason != "end"]
    assert [
        (t.side, t.lot_size, t.open_price, t.stop_loss, t.take_profit, t.close_price, t.close_reason, t.profit,
         t.opened_at // 60 * 60, t.closed_at // 60 * 60)
        for t in closed
    ] == [
        (t.side, t.volume, t.open_price, t.stop_loss, t.take_profit, t.close_price, t.reason, t.profit,
         t.open_time, t.close_time)
        for t in expected
    ]
    assert closed[-1].balance_after == expected[-1].balance


def test_the_replay_market_gives_the_bars_back_as_its_candles_and_quotes():
    bars = replay_bars(WARM_UP_BARS + 20, seed=9)
    clock = Clock()
    market = BarReplayMarket(clock, "EURUSD", bars)
    # at the start: the warm-up bars complete, the bid at the next bar's open
    candles = market.walks["EURUSD"].candles(WARM_UP_BARS)
    for column in ("time", "open", "high", "low", "close"):
        assert np.array_equal(getattr(candles, column), getattr(bars, column)[:WARM_UP_BARS])
    assert market.quote("EURUSD")[0] == CATALOG["EURUSD"].round_price(bars.open[WARM_UP_BARS])
    # ten bars on
    clock.advance(600)
    market.advance()
    candles = market.walks["EURUSD"].candles(WARM_UP_BARS + 10)
    assert np.array_equal(candles.high, bars.high[: WARM_UP_BARS + 10])
    assert np.array_equal(candles.low, bars.low[: WARM_UP_BARS + 10])
    # the other symbols still walk
    assert market.quote("XAUUSD")[0] > 0

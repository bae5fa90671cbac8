"""
The backtester's replay engine on series whose trades are worked out by hand,
bar by bar, and its screens against evaluating every bar.
"""

from decimal import Decimal

import attrs
import numpy as np
import pytest

from tradebot.backtest.bars import bars_from_arrays
from tradebot.backtest.engine import END_OF_DATA, backtest
from tradebot.backtest.report import summarize, summary_text
from tradebot.broker import BUY, SELL
from tradebot.brokers.paper import CATALOG
from tradebot.plans.engine import Entry, PlanEngine, PlanEvent
from tradebot.plans.files import load_plan, plan_from_dict
from tradebot.plans.plan import LOSS, Plan
from tradebot.signals.names import strategy_from_name

EURUSD = CATALOG["EURUSD"]  # 5 digits, 100000 per lot, stops level 5, spread 10 points
# BUY after a close at or below the one before and then one above it; SELL
# after one at or above and then one below (a 1-bar over a 2-bar average).
# Stops 200 / 400 points: at 0.01 lot, 20 pips cost $2.00, 40 pips make $4.00.
STRATEGY = "ma_cross:fast=1,slow=2,stops=fixed,sl_points=200,tp_points=400"

# (open, high, low, close) per bar, one minute apart.
SERIES = [
    (1.1000, 1.1000, 1.1000, 1.1000),  # 0
    (1.1000, 1.1000, 1.1000, 1.1000),  # 1
    (1.1000, 1.1000, 1.0990, 1.0990),  # 2 down
    (1.0990, 1.1000, 1.0990, 1.1000),  # 3 up: BUY on bars 0-3, filled at bar 4's open
    (1.1002, 1.1010, 1.0995, 1.1005),  # 4 gaps up: BUY at ask 1.10030, SL 1.09830, TP 1.10430
    (1.1005, 1.1045, 1.1000, 1.1040),  # 5 high reaches the TP: +$4.00
    (1.1040, 1.1042, 1.1028, 1.1030),  # 6 down after up: SELL, filled at bar 7's open
    (1.1030, 1.1035, 1.1025, 1.1032),  # 7 SELL at bid 1.10300, SL 1.10500, TP 1.09900
    (1.1032, 1.1050, 1.0985, 1.1000),  # 8 ask reaches both the SL and the TP: the SL, -$2.00
    (1.1000, 1.1001, 1.0999, 1.1000),  # 9 SELL (signalled by bar 8) at 1.10000, SL 1.10200, TP 1.09600: open at the end
]


def series_bars(rows=SERIES, start=1_704_067_200.0):
    columns = np.array(rows, dtype=np.float64)
    times = start + 60.0 * np.arange(len(rows))
    return bars_from_arrays("EURUSD", times, *columns.T)


def run(bars=None, spread=10, commission="0", plan="fixed", strategy=STRATEGY, **options):
    spec = attrs.evolve(EURUSD, spread=spread)
    return backtest(
        bars if bars is not None else series_bars(),
        strategy_from_name(strategy),
        PlanEngine(plan if isinstance(plan, Plan) else load_plan(plan)),
        spec,
        Decimal("10000"),
        commission_per_lot=Decimal(commission),
        **options,
    )


def trade_rows(result):
    return [
        (t.side, t.volume, t.open_price, t.stop_loss, t.take_profit, t.close_price, t.reason, t.profit, t.balance)
        for t in result.trades
    ]


def D(text):
    return Decimal(text)


def test_the_trades_of_a_series_worked_out_bar_by_bar():
    result = run()
    assert trade_rows(result) == [
        (BUY, D("0.01"), D("1.10030"), D("1.09830"), D("1.10430"), D("1.10430"), "tp", D("4.00"), D("10004.00")),
        (SELL, D("0.01"), D("1.10300"), D("1.10500"), D("1.09900"), D("1.10500"), "sl", D("-2.00"), D("10002.00")),
        # still open on the last bar: closed at its close, at the ask
        (SELL, D("0.01"), D("1.10000"), D("1.10200"), D("1.09600"), D("1.10010"), END_OF_DATA, D("-0.10"), D("10001.90")),
    ]
    times = [(t.open_time, t.close_time) for t in result.trades]
    start = 1_704_067_200.0
    assert times == [(start + 240, start + 300), (start + 420, start + 480), (start + 540, start + 540)]
    assert result.balance == D("10001.90")


def test_a_fill_is_at_the_next_bars_open_not_the_signal_bars_close():
    buy = run().trades[0]
    assert buy.open_time == series_bars().time[4]
    assert buy.open_price == D("1.10020") + D("0.00010")  # bar 4's open plus the spread, not bar 3's close


def test_when_one_bar_reaches_both_stops_the_stop_loss_is_taken():
    sell = run().trades[1]
    assert (sell.reason, sell.close_price, sell.profit) == ("sl", D("1.10500"), D("-2.00"))
    # the same bar without the spike up: the take profit
    rows = list(SERIES)
    rows[8] = (1.1032, 1.1040, 1.0985, 1.1000)
    sell = run(series_bars(rows)).trades[1]
    assert (sell.reason, sell.close_price, sell.profit) == ("tp", D("1.09900"), D("4.00"))


# The BUY opened on bar 4 (ask 1.10030, SL 1.09830, TP 1.10430) and the SELL on
# bar 7 (bid 1.10300, SL 1.10500, TP 1.09900) meet a bar that opens beyond a level.
GAPPED = [
    # (the bar replaced, its (open, high, low, close), the trade, reason, close price, profit)
    (5, (1.0950, 1.0960, 1.0940, 1.0955), 0, "sl", "1.09500", "-5.30"),  # BUY: bid at the open
    (5, (1.1060, 1.1070, 1.1055, 1.1065), 0, "tp", "1.10600", "5.70"),
    (5, (1.1060, 1.1070, 1.0900, 1.0950), 0, "tp", "1.10600", "5.70"),  # then through the SL: the TP came first
    (8, (1.1070, 1.1080, 1.1060, 1.1075), 1, "sl", "1.10710", "-4.10"),  # SELL: ask (open + spread) at the open
    (8, (1.0950, 1.0960, 1.0940, 1.0955), 1, "tp", "1.09510", "7.90"),
]


@pytest.mark.parametrize("bar, row, trade, reason, price, profit", GAPPED)
def test_a_level_the_market_gaps_through_fills_at_the_bars_open(bar, row, trade, reason, price, profit):
    rows = list(SERIES)
    rows[bar] = row
    result = run(series_bars(rows))
    gapped = result.trades[trade]
    assert (gapped.reason, gapped.close_price, gapped.profit) == (reason, D(price), D(profit))
    assert gapped.close_time == series_bars(rows).time[bar]


def test_a_gap_through_the_stop_counts_its_whole_loss_against_the_plans_limits():
    # the plan engine sees the trade's worst equity: the gapped fill, not the stop
    rows = list(SERIES)
    rows[5] = (1.0950, 1.0960, 1.0940, 1.0955)
    seen = []

    class Watching(PlanEngine):
        def update(self, state, balance, equity, now, open_trades, at_reset=None):
            if open_trades:
                seen.append(equity - balance)
            return super().update(state, balance, equity, now, open_trades, at_reset)

    spec = attrs.evolve(EURUSD, spread=10)
    backtest(series_bars(rows), strategy_from_name(STRATEGY), Watching(load_plan("fixed")), spec, Decimal("10000"))
    assert seen[0] == D("-5.30")


def test_the_spread_moves_buys_and_sell_exits_and_commission_comes_off_each_trade():
    result = run(spread=0, commission="7")
    rows = trade_rows(result)
    # no spread: the BUY fills at the bid; 0.07 commission on each 0.01 lot
    assert rows[0][2] == D("1.10020") and rows[0][7] == D("3.93")
    assert rows[1][7] == D("-2.07")
    # the last SELL closes at the bid itself now: nothing lost but the commission
    assert rows[2][5] == D("1.10000") and rows[2][7] == D("-0.07")
    assert result.balance == D("10000") + D("3.93") - D("2.07") - D("0.07")
    assert [t.commission for t in result.trades] == [D("0.07")] * 3


def test_the_stops_are_kept_as_far_as_the_live_minimum():
    # 5 points asked for; the live floor is stops level + spread (+1 point
    # in the helper): 5 + 10 + 1 = 16 points
    result = run(strategy="ma_cross:fast=1,slow=2,stops=fixed,sl_points=5,tp_points=5")
    buy = result.trades[0]
    assert buy.open_price - buy.stop_loss == D("0.00016")
    assert buy.take_profit - buy.open_price == D("0.00016")


ONE_WIN_PASSES = plan_from_dict(
    {
        "name": "one-win",
        "phases": [
            {"name": "challenge", "target_pct": 0.01, "steps": [{"risk_pct": 1.0}]},
            {"name": "funded", "steps": [{"risk_pct": 1.0}]},
        ],
    }
)


def test_the_plan_moves_along_with_each_result():
    # risk 1% at the stop; a win that reaches the 0.01% target passes phase 1
    result = run(plan=ONE_WIN_PASSES)
    first = result.trades[0]
    # 1% of 10000 over the loss of one lot at the stop (0.00200 x 100000 = $200): 0.5 lot
    assert first.volume == D("0.50")
    assert (first.phase, first.step) == (1, 1)
    assert [e.kind for e in result.events][:1] == ["phase_passed"]
    assert (result.trades[1].phase, result.trades[1].step) == (2, 1)


def random_bars(n, seed, symbol="EURUSD"):
    rng = np.random.default_rng(seed)
    close = np.round(1.08 * np.exp(np.cumsum(rng.standard_normal(n) * 2e-4)), 5)
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) + np.round(rng.random(n) * 2e-4, 5)
    low = np.minimum(open_, close) - np.round(rng.random(n) * 2e-4, 5)
    # flat stretches, where averages are equal and crossings are ties
    flat = rng.random(n) < 0.05
    close[flat] = open_[flat]
    return bars_from_arrays(symbol, 1.7e9 + 60.0 * np.arange(n), open_, np.maximum(high, close), np.minimum(low, close), close)


@pytest.mark.parametrize("strategy", ["ma_cross", "ma_cross:fast=1,slow=2", "bollinger_breakout", "rsi_reversal"])
def test_screening_the_series_gives_the_same_trades_as_evaluating_every_bar(strategy):
    bars = random_bars(6000, seed=11)
    screened = run(bars, strategy=strategy, plan="default")
    every_bar = run(bars, strategy=strategy, plan="default", use_screen=False)
    assert len(every_bar.trades) > 30
    assert screened.trades == every_bar.trades
    assert screened.balance == every_bar.balance


def test_an_order_the_paper_broker_would_refuse_for_margin_is_skipped():
    # 0.01 lot at 1.1003 needs 1100.30 / 100 = 11.00 of margin
    rich = run(leverage=Decimal(100))
    assert len(rich.trades) == 3 and rich.skips == ()
    poor = run(leverage=Decimal("0.1"))  # 11003.00 needed, 10000 there
    assert poor.trades == ()
    # every signal now, trading none: bars 3 (BUY), 6 (SELL), 7 (BUY), 8 (SELL)
    assert [s.side for s in poor.skips] == [BUY, SELL, BUY, SELL]
    assert poor.skips[0].reason == "not enough money: margin 11003.00 needed, 10000.00 free"


class BreachingEngine(PlanEngine):
    """The plan engine plus a limit no shipped plan has, so the backtester's
    side of breaches is seen bar by bar: a losing trade breaches it and fails
    the plan, and a failed plan opens nothing. It records the equity each
    update is given."""

    def __init__(self, plan):
        super().__init__(plan)
        self.updates = []

    def update(self, state, balance, equity, now, open_trades, at_reset=None):
        self.updates.append((now, balance, equity, open_trades))
        return super().update(state, balance, equity, now, open_trades, at_reset)

    def entry(self, state, balance, equity, loss_per_lot, spec, now):
        if state.status == "failed":
            return Entry(None, "the plan failed")
        return super().entry(state, balance, equity, loss_per_lot, spec, now)

    def closed(self, state, result, balance, now, open_trades=0, **given):
        state, events = super().closed(state, result, balance, now, open_trades, **given)
        if result == LOSS:
            state = attrs.evolve(state, status="failed")
            events = events + [PlanEvent("max_loss_breach", now, state.phase, state.step, balance, balance, "lost once")]
        return state, events


def test_the_plan_engine_is_given_the_worst_equity_and_its_breaches_and_skips_count():
    engine = BreachingEngine(load_plan("fixed"))
    result = backtest(
        series_bars(), strategy_from_name(STRATEGY), engine, attrs.evolve(EURUSD, spread=10), Decimal("10000")
    )
    start = 1_704_067_200.0
    # while the BUY was open (bars 4-5), its worst bid was bar 4's low 1.09950:
    # 80 points under the 1.10030 entry, -0.80 at 0.01 lot
    assert (start + 240, D("10000.00"), D("9999.20"), 1) in engine.updates
    # the SELL's worst ask is its stop loss (bar 8 went further, but the stop closed it)
    assert (start + 480, D("10004.00"), D("10002.00"), 1) in engine.updates
    # the loss failed the plan: the replay ends there, the third signal is never traded
    assert len(result.trades) == 2 and result.skips == ()
    summary = summarize(result)
    assert (summary.status, summary.skipped) == ("failed", 0)
    assert summary.breaches == ("2024-01-01 00:08 max_loss_breach: lost once",)
    assert "breaches: 1\n  2024-01-01 00:08 max_loss_breach: lost once\n" in summary_text(summary)


def test_the_backtester_converts_a_loss_at_the_stop_as_the_paper_market_does():
    from twisted.internet.task import Clock

    from tradebot.backtest.engine import account_profit
    from tradebot.broker import BUY as B
    from tradebot.brokers.paper import CATALOG as C
    from tradebot.brokers.paper import PaperMarket

    market = PaperMarket(Clock())
    args = (B, Decimal("1"), Decimal("151.512"), Decimal("150.012"))
    backtested = account_profit(C["USDJPY"], *args)
    assert backtested == market.profit(args[0], "USDJPY", *args[1:])
    assert backtested.quantize(Decimal("0.01")) == Decimal("-999.92")


def test_a_day_that_begins_while_a_trade_is_open_starts_from_the_reset_instants_balance():
    # the BUY of bar 4 stays open over midnight UTC and closes at its stop after it
    rows = [(1.1000, 1.1000, 1.1000, 1.1000)] * 3 + [(1.0990, 1.1000, 1.0990, 1.1000)]
    rows += [(1.1002, 1.1010, 1.0995, 1.1005)] + [(1.1005, 1.1010, 1.1000, 1.1005)] * 3
    rows += [(1.1005, 1.1006, 1.0970, 1.0975)]  # the first bar after midnight reaches the stop
    start = 1_704_153_600.0 - 60 * 8  # bar 8 opens at midnight
    bars = series_bars(rows, start=start)
    daily = {"name": "d", "time_zone": "UTC", "phases": [{"max_daily_loss_pct": 5, "steps": [{"lot": 0.01}]}]}
    result = run(bars, plan=plan_from_dict(daily))
    [trade] = result.trades
    assert (trade.reason, trade.close_time) == ("sl", start + 60 * 8)
    [rollover] = [e for e in result.events if e.kind == "day_rollover"]
    assert rollover.balance == Decimal("10000")  # before the stop's loss, not 9,998
    assert result.state.day_start_balance == Decimal("10000")

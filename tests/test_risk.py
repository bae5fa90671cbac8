"""
The plan engine (tradebot.plans.engine): each step rule, each shipped plan's
transitions, the trading day across time zones and DST, static and trailing
maximum loss, minimum trading days, lot cutting at the headroom, breaches.
All pure: times are epoch seconds given to the engine.
"""

import datetime
from decimal import Decimal

import attrs
import pytest

from tradebot.broker import SymbolSpec
from tradebot.plans.engine import (
    ACTIVE,
    COMPLETED,
    DAILY_BREACH,
    DAY_ROLLOVER,
    FAILED,
    MAX_LOSS_BREACH,
    PAUSED_TODAY,
    PHASE_FAILED,
    PHASE_PASSED,
    STEP_CHANGED,
    Entry,
    PlanEngine,
)
from tradebot.plans.files import load_plan, plan_from_dict
from tradebot.plans.plan import LOSS, PROFIT

D = Decimal
EURUSD = SymbolSpec("EURUSD", 5, D(100000), D("0.01"), D("100"), D("0.01"))


def at(text: str, tz: str = "UTC") -> float:
    """Epoch seconds of a wall-clock time in a zone: at("2026-03-02 10:00")."""
    from zoneinfo import ZoneInfo

    return datetime.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


T0 = at("2026-03-02 10:00")  # a Monday


def engine(**phase):
    """An engine for a one-phase plan: fixed 0.10 lot steps unless given."""
    doc = {"name": "t", "phases": [dict({"steps": [{"lot": 0.1}]}, **phase)]}
    return PlanEngine(plan_from_dict(doc))


def ladder(on_profit, on_loss, steps=3, **extra):
    return engine(
        steps=[{"lot": round(0.1 * (i + 1), 2)} for i in range(steps)], on_profit=on_profit, on_loss=on_loss, **extra
    )


# -- the step ladder ---------------------------------------------------------------


@pytest.mark.parametrize(
    "action, start, expected",
    [("next", 1, 2), ("next", 2, 3), ("reset", 3, 1), ("prev", 3, 2), ("prev", 1, 1), ("hold", 2, 2)],
)
@pytest.mark.parametrize("result", [PROFIT, LOSS])
def test_each_step_rule(action, start, expected, result):
    e = ladder(action if result == PROFIT else "hold", action if result == LOSS else "hold")
    state = attrs.evolve(e.start(D(10000), T0), step=start)
    after, events = e.closed(state, result, D(10000), T0)
    assert after.step == expected
    assert [ev.kind for ev in events] == ([STEP_CHANGED] if expected != start else [])
    if expected != start:
        assert events[0].detail == f"{result}: step {start} -> {expected}"


@pytest.mark.parametrize("past, expected", [("hold", 3), ("reset", 1), ("prev", 2)])
def test_next_past_max_steps_does_what_the_phase_says(past, expected):
    e = ladder("next", "next", steps=4, max_steps=3, past_max_steps=past)
    state = attrs.evolve(e.start(D(10000), T0), step=3)
    assert e.closed(state, LOSS, D(10000), T0)[0].step == expected


def test_a_step_overrides_its_phases_action():
    e = engine(on_loss="next", steps=[{"lot": 0.1}, {"lot": 0.2, "on_loss": "reset"}, {"lot": 0.3}])
    state = e.start(D(10000), T0)
    state = e.closed(state, LOSS, D(9900), T0)[0]
    assert state.step == 2
    assert e.closed(state, LOSS, D(9800), T0)[0].step == 1


def test_step_sizes_lot_risk_and_multiplier():
    e = PlanEngine(plan_from_dict({"phases": [{
        "base_lot": 0.05, "on_loss": "next",
        "steps": [{"lot": 0.07}, {"risk_pct": 1}, {"multiplier": 3}],
    }]}))
    state = e.start(D(10000), T0)
    # 1% of 10000 = 100; one lot loses 400 at the stop: 0.25 lot
    sizes = [e.entry(attrs.evolve(state, step=s), D(10000), D(10000), D(400), EURUSD, T0).lot for s in (1, 2, 3)]
    assert sizes == [D("0.07"), D("0.25"), D("0.15")]


def test_a_risk_step_without_a_stop_is_skipped_not_raised():
    e = engine(steps=[{"risk_pct": 1}])
    entry = e.entry(e.start(D(10000), T0), D(10000), D(10000), D(0), EURUSD, T0)
    assert entry.lot is None and "nothing at risk" in entry.reason


# -- shipped plans --------------------------------------------------------------------


def walk(e, results, balance=D(10000)):
    state = e.start(balance, T0)
    seen = []
    for result in results:
        state = e.closed(state, result, balance, T0)[0]
        seen.append(state.step)
    return seen


def test_martingale_doubles_after_losses_resets_on_profit_and_after_5_steps():
    e = PlanEngine(load_plan("martingale"))
    assert walk(e, [LOSS, LOSS, PROFIT, LOSS, LOSS, LOSS, LOSS, LOSS]) == [2, 3, 1, 2, 3, 4, 5, 1]
    state = e.start(D(100000), T0)
    lots = [e.entry(attrs.evolve(state, step=s), D(100000), D(100000), D(10), EURUSD, T0).lot for s in range(1, 6)]
    assert lots == [D("0.01"), D("0.02"), D("0.04"), D("0.08"), D("0.16")]


def test_paroli_doubles_after_profits_for_3_steps_and_resets_on_loss():
    e = PlanEngine(load_plan("paroli"))
    assert walk(e, [PROFIT, PROFIT, PROFIT, PROFIT, LOSS, PROFIT, LOSS]) == [2, 3, 1, 2, 1, 2, 1]


def test_fixed_risk_holds_at_one_percent():
    e = PlanEngine(load_plan("fixed-risk"))
    assert walk(e, [PROFIT, LOSS, LOSS]) == [1, 1, 1]
    assert e.entry(e.start(D(10000), T0), D(10000), D(10000), D(1000), EURUSD, T0).lot == D("0.10")


def test_fixed_is_001_lot_with_no_binding_limit():
    e = PlanEngine(load_plan("fixed"))
    state = e.start(D(10000), T0)
    assert walk(e, [PROFIT, LOSS]) == [1, 1]
    # even with equity at a fraction of the start, nothing breaches or cuts
    state, events = e.update(state, D(100), D(50), T0, open_trades=1)
    assert (state.status, events) == (ACTIVE, [])
    assert e.entry(state, D(100), D(50), D(100000), EURUSD, T0) == Entry(D("0.01"), None)


def test_default_is_ftmos_2_step_as_ftmo_measures_it():
    e = PlanEngine(load_plan("default"))
    state = e.start(D(100000), T0)
    assert (e.target(state), e.daily_floor(state), e.overall_floor(state)) == (D(110000), D(95000), D(90000))
    assert walk(e, [LOSS, LOSS, LOSS, PROFIT], D(100000)) == [2, 3, 3, 1]
    assert e.buffer(state) == D(500)  # 0.5% of the initial capital kept back when sizing
    for day in range(4):  # four trading days
        state = e.opened(state, T0 + day * 86400)
    state, events = e.update(state, D(110000), D(110000), T0 + 3 * 86400, open_trades=0)
    assert state.phase == 2 and state.phase_start_balance == D(110000) and state.trading_days == 0
    # the Verification: a new 100k account (target 105k, floor 90k), here 10k higher
    assert (e.target(state), e.overall_floor(state), e.daily_floor(state)) == (D(115000), D(100000), D(105000))
    assert PHASE_PASSED in [ev.kind for ev in events]
    # a daily breach fails the phase, as at FTMO
    state, events = e.update(state, D(110000), D("104999"), T0 + 3 * 86400 + 60, open_trades=1)
    assert state.status == FAILED and [ev.kind for ev in events] == [DAILY_BREACH, PHASE_FAILED]


@pytest.mark.parametrize(
    "name, zone, hour, basis, breach, targets, daily, overall",
    [
        ("default", "Europe/Prague", 0, "initial", "fail", [10, 5, None], 5, (10, "static")),
        ("ftmo-1step", "Europe/Prague", 0, "initial", "fail", [10, None], 3, (10, "trailing")),
        ("the5ers-high-stakes", "America/New_York", 17, "day_start_max", "fail", [8, 5, None], 5, (10, "static")),
        ("fundednext-stellar-2step", "America/New_York", 17, "initial", "fail", [8, 5, None], 5, (10, "static")),
    ],
)
def test_each_shipped_prop_firm_plan_encodes_its_firms_rules(name, zone, hour, basis, breach, targets, daily, overall):
    plan = load_plan(name)
    assert (plan.time_zone, plan.day_reset_hour, plan.daily_loss_basis, plan.on_daily_breach) == (zone, hour, basis, breach)
    assert plan.next_phase_from == "initial"
    assert [p.target_pct for p in plan.phases] == [None if t is None else D(t) for t in targets]
    assert all(p.max_daily_loss_pct == D(daily) for p in plan.phases)
    assert all((p.max_loss_pct, p.max_loss_mode) == (D(overall[0]), overall[1]) for p in plan.phases)


def test_no_shipped_plan_uses_a_fixed_offset_for_its_day():
    from tradebot.plans.files import plan_names

    for name in plan_names():
        assert not load_plan(name).time_zone.startswith("UTC+"), name


# -- the trading day ------------------------------------------------------------------


def test_day_rolls_over_at_midnight_prague_not_utc():
    e = engine(max_daily_loss_pct=5)
    e = PlanEngine(attrs.evolve(e.plan, time_zone="Europe/Prague"))
    state = e.start(D(10000), at("2026-01-14 22:30"))  # 23:30 in Prague (CET, UTC+1)
    assert state.day == "2026-01-14"
    state, events = e.update(state, D(10200), D(10150), at("2026-01-14 22:59:59"), 0)
    assert (state.day, events) == ("2026-01-14", [])
    state, events = e.update(state, D(10200), D(10150), at("2026-01-14 23:00"), 0)  # Prague midnight
    assert state.day == "2026-01-15" and state.day_start_balance == D(10200)
    assert [(ev.kind, ev.balance, ev.equity) for ev in events] == [(DAY_ROLLOVER, D(10200), D(10150))]


def test_day_rollover_follows_the_dst_change():
    e = PlanEngine(attrs.evolve(engine().plan, time_zone="Europe/Prague"))
    # before 29 March 2026 Prague midnight is 23:00 UTC, after it 22:00 UTC
    assert e.plan.day_of(at("2026-03-27 22:59:59")) == "2026-03-27"
    assert e.plan.day_of(at("2026-03-27 23:00")) == "2026-03-28"
    assert e.plan.day_of(at("2026-03-29 21:59:59")) == "2026-03-29"
    assert e.plan.day_of(at("2026-03-29 22:00")) == "2026-03-30"


def test_reset_hour_and_fixed_offset_the5ers_style():
    plan = plan_from_dict({"time_zone": "UTC+3", "day_reset_hour": 0, "phases": [{"steps": [{"lot": 1}]}]})
    assert plan.day_of(at("2026-06-01 20:59:59")) == "2026-06-01"
    assert plan.day_of(at("2026-06-01 21:00")) == "2026-06-02"  # 00:00 UTC+3
    later = attrs.evolve(plan, time_zone="UTC", day_reset_hour=17)
    assert later.day_of(at("2026-06-01 16:59")) == "2026-05-31"
    assert later.day_of(at("2026-06-01 17:00")) == "2026-06-01"


# -- limits --------------------------------------------------------------------------


def test_daily_breach_pauses_for_the_rest_of_the_day_only():
    e = engine(max_daily_loss_pct=5)
    state = e.start(D(10000), T0)
    state, events = e.update(state, D(10000), D(9500), T0, 1)  # exactly at the limit: no breach
    assert (state.status, events) == (ACTIVE, [])
    state, events = e.update(state, D(10000), D("9499.99"), T0 + 60, 1)
    assert state.status == PAUSED_TODAY
    assert [(ev.kind, ev.balance, ev.equity) for ev in events] == [(DAILY_BREACH, D(10000), D("9499.99"))]
    assert e.entry(state, D(9400), D(9400), D(100), EURUSD, T0 + 120).lot is None
    again, events = e.update(state, D(9400), D(9300), T0 + 180, 0)
    assert (again.status, events) == (PAUSED_TODAY, [])  # recorded once
    state, events = e.update(again, D(9400), D(9400), T0 + 86400, 0)
    assert state.status == ACTIVE and state.day_start_balance == D(9400)
    assert [ev.kind for ev in events] == [DAY_ROLLOVER]


def test_static_max_loss_fails_the_phase_for_good():
    e = engine(max_loss_pct=10)
    state = e.start(D(10000), T0)
    state, events = e.update(state, D(9200), D(9000), T0, 1)  # exactly at the limit: no breach
    assert (state.status, events) == (ACTIVE, [])
    state, events = e.update(state, D(9200), D("8999.99"), T0, 1)
    assert state.status == FAILED
    assert [ev.kind for ev in events] == [MAX_LOSS_BREACH, PHASE_FAILED]
    state, events = e.update(state, D(12000), D(12000), T0 + 86400, 0)
    assert state.status == FAILED
    assert e.entry(state, D(12000), D(12000), D(100), EURUSD, T0 + 86400).reason.startswith("phase 1 failed")


def test_trailing_max_loss_follows_the_highest_end_of_day_balance_less_a_share_of_the_initial_capital():
    # FTMO 1-Step: the highest end-of-day balance (or, if higher, the initial
    # capital) less 10% of the initial capital, not 10% of that balance
    static = engine(max_loss_pct=10)
    trailing = engine(max_loss_pct=10, max_loss_mode="trailing")
    for e in (static, trailing):
        state = e.start(D(10000), T0)
        assert e.overall_floor(state) == D(9000)
        state, _ = e.update(state, D(11000), D(11000), T0 + 86400, 0)  # day 2 starts at 11000
        state, _ = e.update(state, D(10500), D(10500), T0 + 2 * 86400, 0)  # a lower end of day
        assert state.peak_eod_balance == D(11000)
        result, _ = e.update(state, D(10000), D("9950"), T0 + 2 * 86400 + 60, 1)
        assert result.status == (FAILED if e is trailing else ACTIVE)
        assert e.overall_floor(state) == (D(10000) if e is trailing else D(9000))  # 11000 - 1000, not 9900


def test_target_needs_no_open_trade_and_min_trading_days():
    e = engine(target_pct=10, min_trading_days=2)
    state = e.opened(e.start(D(10000), T0), T0)
    state = e.opened(state, T0 + 3600)  # the same day counts once
    assert state.trading_days == 1
    assert e.update(state, D(11000), D(11000), T0 + 7200, 0)[0].status == ACTIVE  # 1 day < 2
    state = e.opened(state, T0 + 86400)
    assert e.update(state, D(11000), D(11000), T0 + 86400, 1)[0].status == ACTIVE  # a trade is open
    assert e.update(state, D("10999.99"), D(11000), T0 + 86400, 0)[0].status == ACTIVE
    done, events = e.update(state, D(11000), D(11000), T0 + 86400, 0)
    assert done.status == COMPLETED and done.phase == 1  # the last phase holds
    assert [ev.kind for ev in events] == [DAY_ROLLOVER, PHASE_PASSED]
    assert e.entry(done, D(11000), D(11000), D(10), EURUSD, T0).lot is None


def test_closed_passes_the_phase_when_the_close_reaches_the_target():
    e = PlanEngine(plan_from_dict({"phases": [
        {"target_pct": 10, "steps": [{"lot": 0.1}, {"lot": 0.2}], "on_loss": "next"},
        {"target_pct": 5, "steps": [{"lot": 0.1}]},
    ]}))
    state = attrs.evolve(e.opened(e.start(D(10000), T0), T0), step=2)
    state, events = e.closed(state, PROFIT, D(11000), T0 + 60)
    assert (state.phase, state.step, state.phase_start_balance, state.status) == (2, 1, D(11000), ACTIVE)
    assert [ev.kind for ev in events] == [PHASE_PASSED]
    assert e.closed(state, PROFIT, D(11000), T0, open_trades=0)[0].phase == 2


def test_old_next_phase_action_moves_phase_and_records_it():
    e = PlanEngine(plan_from_dict({"phases": [
        {"on_profit": "next_phase", "steps": [{"lot": 0.1}]}, {"steps": [{"lot": 0.1}]}
    ]}))
    state, events = e.closed(e.start(D(10000), T0), PROFIT, D(10100), T0)
    assert (state.phase, state.phase_start_balance) == (2, D(10100))
    assert [ev.kind for ev in events] == [PHASE_PASSED]


# -- lot cutting ------------------------------------------------------------------------


def test_lot_is_cut_to_the_smaller_headroom():
    e = engine(steps=[{"lot": 1}], max_daily_loss_pct=5, max_loss_pct=10)
    state = e.start(D(10000), T0)
    # day started at 10000 (floor 9500); phase floor 9000; equity 9700: 200 left today
    entry = e.entry(state, D(9800), D(9700), D(1000), EURUSD, T0)
    assert entry == Entry(D("0.20"), "lot cut from 1.00 to 0.20 to fit the 200.00 left under the daily loss limit")
    # a new day from 9300 (floor 8835): the overall floor 9000 binds, 300 left
    state, _ = e.update(state, D(9300), D(9300), T0 + 86400, 0)
    entry = e.entry(state, D(9300), D(9300), D(1000), EURUSD, T0 + 86400)
    assert entry.lot == D("0.30") and "overall" in entry.reason


def test_cut_rounds_down_to_the_volume_step():
    e = engine(steps=[{"lot": 1}], max_daily_loss_pct=5)
    entry = e.entry(e.start(D(10000), T0), D(10000), D(10000), D(3000), EURUSD, T0)
    assert entry.lot == D("0.16")  # 500 / 3000 = 0.1666...; 0.17 would lose 510


def test_below_the_minimum_volume_the_trade_is_skipped():
    e = engine(steps=[{"lot": 1}], max_daily_loss_pct=5)
    entry = e.entry(e.start(D(10000), T0), D(10000), D(9505), D(1000), EURUSD, T0)  # 5 left; 0.01 loses 10
    assert entry == Entry(None, "0.01 lot would lose more than the 5.00 left under the daily loss limit")


def test_a_lot_that_fits_is_not_cut():
    e = engine(steps=[{"lot": 0.5}], max_daily_loss_pct=5)
    assert e.entry(e.start(D(10000), T0), D(10000), D(10000), D(1000), EURUSD, T0) == Entry(D("0.50"), None)


def test_no_stop_with_limits_is_skipped():
    e = engine(max_daily_loss_pct=5)
    entry = e.entry(e.start(D(10000), T0), D(10000), D(10000), D(0), EURUSD, T0)
    assert entry.lot is None and "no stop loss" in entry.reason


# -- measured the way the firms measure (issue 13's worked examples) ---------------------------

K = D(1000)


def firm_engine(plan_keys=None, **phase):
    """A one-phase plan with plan-level keys (basis, breach, buffer...) and
    phase keys; 10-lot steps so the limits, not the ladder, size the trade."""
    doc = dict({"name": "firm", "phases": [dict({"steps": [{"lot": 10}]}, **phase)]}, **(plan_keys or {}))
    return PlanEngine(plan_from_dict(doc))


def day2(e, balance, equity=None):
    """A 100k account whose second day starts at `balance` (and `equity`)."""
    state = e.start(100 * K, T0)
    state, _ = e.update(state, balance, equity or balance, T0 + 86400, 0)
    return state


@pytest.mark.parametrize(
    "basis, floor, lots",
    [("initial", 103 * K, D("5.00")), ("day_start", D(102600), D("7.00"))],
)
def test_ftmos_daily_floor_is_the_days_balance_less_5_percent_of_the_initial_capital(basis, floor, lots):
    # 100k account, the day starting at 108,000: FTMO's floor is 103,000; 5% of
    # the day's balance would be 102,600. At equity 104,000, a 20-pip EURUSD
    # stop (200 a lot) fits 5.00 lots under FTMO's floor: the stop leaves
    # 103,000. Sized on the day's balance, 7.00 lots leave 102,600: a fail at FTMO.
    e = firm_engine({"daily_loss_basis": basis}, max_daily_loss_pct=5)
    state = day2(e, 108 * K)
    assert e.daily_floor(state) == floor
    entry = e.entry(state, 108 * K, 104 * K, D(200), EURUSD, T0 + 86400 + 60)
    assert entry.lot == lots
    assert 104 * K - entry.lot * 200 == floor


def test_the5ers_daily_floor_is_from_the_higher_of_balance_and_equity_at_the_days_start():
    e = firm_engine({"daily_loss_basis": "day_start_max"}, max_daily_loss_pct=5)
    state = day2(e, 100 * K, 102 * K)  # a trade 2,000 up when the day began
    assert e.daily_floor(state) == D(96900)  # 5% under 102,000, not under 100,000
    state = day2(e, 100 * K, 99 * K)
    assert e.daily_floor(state) == 95 * K


@pytest.mark.parametrize("on_breach, status, after", [("fail", FAILED, FAILED), ("pause", PAUSED_TODAY, COMPLETED)])
def test_a_daily_breach_ends_the_phase_where_the_firm_ends_it(on_breach, status, after):
    # day start 105,000, equity 99,700: under the 100,000 floor (5% of 100k)
    e = firm_engine({"daily_loss_basis": "initial", "on_daily_breach": on_breach}, max_daily_loss_pct=5, target_pct=10)
    state = day2(e, 105 * K)
    state, events = e.update(state, 105 * K, D(99700), T0 + 86400 + 60, 1)
    assert state.status == status
    assert [ev.kind for ev in events] == ([DAILY_BREACH, PHASE_FAILED] if on_breach == "fail" else [DAILY_BREACH])
    # a later close at 110,000: a phase that failed stays failed; a paused one passes
    state, _ = e.closed(state, PROFIT, 110 * K, T0 + 86400 + 120)
    assert state.status == after
    assert e.entry(state, 110 * K, 110 * K, D(200), EURUSD, T0 + 86400 + 180).lot is None


@pytest.mark.parametrize(
    "keys, open_risk, lots",
    [
        ({}, 0, D("3.00")),  # 600 of headroom, 200 a lot: the stop lands on the floor
        ({"safety_buffer": 100}, 0, D("2.50")),  # 100 kept back: a point of slippage fits
        ({"safety_buffer_pct": D("0.1")}, 0, D("2.50")),  # 0.1% of the 100k initial capital
        ({}, 300, D("1.50")),  # an open trade would lose 300 more at its stop
    ],
)
def test_a_safety_buffer_and_the_open_trades_risk_come_off_the_headroom(keys, open_risk, lots):
    e = firm_engine(dict({"daily_loss_basis": "initial"}, **keys), max_daily_loss_pct=5)
    state = day2(e, 100 * K)
    entry = e.entry(state, 100 * K, D(95600), D(200), EURUSD, T0 + 86400 + 60, open_risk=D(open_risk))
    assert entry.lot == lots


@pytest.mark.parametrize(
    "next_from, target, floor",
    [("initial", 115 * K, 100 * K), ("balance", D(115500), 99 * K)],
)
def test_the_next_phase_counts_from_the_initial_capital_when_the_firm_gives_a_new_account(next_from, target, floor):
    # FTMO: the Verification is a fresh 100k account (target 105k, floor 90k).
    # The same broker account going on at 110k: target 115k, floor 100k.
    doc = {
        "name": "ftmo", "next_phase_from": next_from,
        "phases": [
            {"steps": [{"lot": 1}], "target_pct": 10, "max_loss_pct": 10},
            {"steps": [{"lot": 1}], "target_pct": 5, "max_loss_pct": 10},
        ],
    }
    e = PlanEngine(plan_from_dict(doc))
    state = e.start(100 * K, T0)
    state, events = e.closed(state, PROFIT, 110 * K, T0 + 60)
    assert state.phase == 2 and PHASE_PASSED in [ev.kind for ev in events]
    assert (e.target(state), e.overall_floor(state)) == (target, floor)


def test_the_operator_sets_the_initial_capital_and_reference_of_an_account_already_down():
    # a 100k challenge whose account stands at 97,000 when the plan starts
    e = firm_engine({"daily_loss_basis": "initial"}, max_daily_loss_pct=5, max_loss_pct=10, target_pct=10)
    state = e.start(97 * K, T0)
    assert e.overall_floor(state) == D(87300)  # counted from 97,000: wrong for the firm
    state, [event] = e.set(state, T0 + 10, initial_capital=100 * K, reference_balance=100 * K)
    assert (e.overall_floor(state), e.target(state)) == (90 * K, 110 * K)
    assert "initial capital 100000" in event.detail and "reference balance 100000" in event.detail
    # a failed phase restarted by the operator trades again
    state, _ = e.update(state, 89 * K, 89 * K, T0 + 20, 0)
    assert state.status == FAILED
    state, _ = e.set(state, T0 + 30, restart=True, reference_balance=100 * K)
    assert state.status == ACTIVE and state.trading_days == 0


def test_a_day_rolls_over_with_the_balance_of_the_reset_instant():
    # equity 97k at 23:59:59 with a trade open; its stop fills at 00:00:30 (-4k);
    # the first look is at 00:00:45. The day began at 100,000, not at 96,000.
    e = firm_engine(max_daily_loss_pct=5)
    midnight = at("2026-03-03 00:00")
    state = e.start(100 * K, midnight - 3600)
    late, _ = e.update(state, 96 * K, 96 * K, midnight + 45, 0)
    assert late.day_start_balance == 96 * K and e.daily_floor(late) == D(91200)
    right, events = e.update(state, 96 * K, 96 * K, midnight + 45, 0, at_reset=(100 * K, 97 * K))
    assert (right.day_start_balance, right.day_start_equity, e.daily_floor(right)) == (100 * K, 97 * K, 95 * K)
    assert right.peak_eod_balance == 100 * K
    assert events[0].kind == DAY_ROLLOVER and "starts at balance 100000" in events[0].detail


def test_a_trailing_maximum_loss_may_lock_at_the_starting_balance():
    for lock, floor in ((False, 102 * K), (True, 100 * K)):
        e = firm_engine({"trailing_lock": lock}, max_loss_pct=10, max_loss_mode="trailing")
        state = day2(e, 112 * K)
        assert e.overall_floor(state) == floor


def test_a_close_with_other_trades_open_is_judged_on_equity():
    # a loss closes at 94,900 while another trade is 500 up: equity 95,400
    e = firm_engine({"daily_loss_basis": "initial", "on_daily_breach": "fail"}, max_daily_loss_pct=5)
    state = day2(e, 100 * K)
    judged, _ = e.closed(state, LOSS, D(94900), T0 + 86400 + 60, open_trades=1, equity=D(95400))
    assert judged.status == ACTIVE
    judged, _ = e.closed(state, LOSS, D(94900), T0 + 86400 + 60, open_trades=1, equity=D(94900))
    assert judged.status == FAILED


def test_a_risk_step_never_rounds_up_to_the_minimum_volume_unless_the_plan_allows_it():
    # 1% of 10,000 is 100; a lot loses 16,000 at the stop: 0.00625 lot
    doc = {"name": "r", "phases": [{"steps": [{"risk_pct": 1}]}]}
    e = PlanEngine(plan_from_dict(doc))
    state = e.start(D(10000), T0)
    skipped = e.entry(state, D(10000), D(10000), D(16000), EURUSD, T0)
    assert skipped.lot is None and "less than the minimum volume 0.01" in skipped.reason
    e = PlanEngine(plan_from_dict(dict(doc, round_up_to_min_volume=True)))
    assert e.entry(state, D(10000), D(10000), D(16000), EURUSD, T0).lot == D("0.01")


@pytest.mark.parametrize("keys, step", [({}, 2), ({"on_breakeven": "reset"}, 1), ({"on_breakeven": "next"}, 3)])
def test_a_breakeven_trade_moves_the_ladder_by_its_own_rule(keys, step):
    from tradebot.plans.plan import BREAKEVEN

    e = ladder("reset", "next", **keys)
    state = attrs.evolve(e.start(D(10000), T0), step=2)
    state, _ = e.closed(state, BREAKEVEN, D(10000), T0 + 60)
    assert state.step == step

"""
Money-management plans: every transition rule, lot sizing, rounding and
clamping, and the errors a malformed plan file gets.
"""

from decimal import Decimal

import pytest

from tradebot.broker import SymbolSpec
from tradebot.plans.files import load_plan, plan_from_dict, plan_names
from tradebot.plans.plan import PlanError

GOLD = SymbolSpec("XAUUSD", 2, Decimal(100), Decimal("0.01"), Decimal("100"), Decimal("0.01"))
COARSE = SymbolSpec("COARSE", 2, Decimal(1), Decimal("0.10"), Decimal("2"), Decimal("0.10"))


def plan(*phases, after_last_step="stay"):
    return plan_from_dict({"name": "t", "after_last_step": after_last_step, "phases": list(phases)})


def phase(steps=2, on_profit="next_step", on_loss="next_step", **step_overrides):
    rungs = [{"lot": 0.1 * (i + 1)} for i in range(steps)]
    for index, override in step_overrides.items():
        rungs[int(index[1:]) - 1].update(override)
    return {"on_profit": on_profit, "on_loss": on_loss, "steps": rungs}


@pytest.mark.parametrize(
    "rule, start, expected",
    [
        ("next_step", (1, 1), (1, 2)),
        ("reset", (1, 2), (1, 1)),
        ("next_phase", (1, 2), (2, 1)),
        ("stay", (1, 2), (1, 2)),
    ],
)
@pytest.mark.parametrize("result", ["profit", "loss"])
def test_each_action_moves_as_documented(rule, start, expected, result):
    rules = {"on_profit": rule} if result == "profit" else {"on_loss": rule}
    p = plan(phase(3, **rules), phase(3))
    assert p.next_position(*start, result) == expected


def test_profit_and_loss_follow_their_own_rule():
    p = plan(phase(3, on_profit="reset", on_loss="next_step"))
    assert p.next_position(1, 2, "profit") == (1, 1)
    assert p.next_position(1, 2, "loss") == (1, 3)


@pytest.mark.parametrize(
    "after, expected",
    [("stay", (1, 2)), ("reset", (1, 1)), ("next_phase", (2, 1))],
)
def test_past_the_last_step_the_plan_decides(after, expected):
    p = plan(phase(2), phase(2), after_last_step=after)
    assert p.next_position(1, 2, "loss") == expected


def test_next_phase_from_the_last_phase_restarts_it():
    p = plan(phase(2), phase(3, on_profit="next_phase"))
    assert p.next_position(2, 3, "profit") == (2, 1)


def test_a_step_overrides_its_phase():
    p = plan(phase(3, on_loss="next_step", s2={"on_loss": "reset"}))
    assert p.next_position(1, 1, "loss") == (1, 2)
    assert p.next_position(1, 2, "loss") == (1, 1)


def test_a_position_outside_the_plan_is_clamped():
    p = plan(phase(2), phase(3))
    assert p.position(0, 0) == (1, 1)
    assert p.position(7, 9) == (2, 3)
    assert p.next_position(9, 9, "loss") == (2, 3)


def test_a_result_must_be_profit_or_loss():
    with pytest.raises(ValueError):
        plan(phase()).next_position(1, 1, "draw")


def test_a_risk_step_sizes_the_lot_from_the_loss_at_the_stop():
    p = plan({"steps": [{"risk_pct": 1}, {"risk_pct": 0.5}]})
    # 1% of 10000 = 100 at risk; one lot loses 500 at the stop: 0.20 lot
    assert p.lot_size(1, 1, Decimal("10000"), Decimal("500"), GOLD) == Decimal("0.20")
    assert p.lot_size(1, 2, Decimal("10000"), Decimal("500"), GOLD) == Decimal("0.10")


def test_a_lot_is_rounded_down_to_the_volume_step():
    p = plan({"steps": [{"risk_pct": 1}]})
    # 100 / 333 = 0.3003 lot: 0.30, never rounded up past the risk
    assert p.lot_size(1, 1, Decimal("10000"), Decimal("333"), GOLD) == Decimal("0.30")
    assert p.lot_size(1, 1, Decimal("10000"), Decimal("333"), COARSE) == Decimal("0.30")
    assert p.lot_size(1, 1, Decimal("10000"), Decimal("260"), COARSE) == Decimal("0.30")


def test_a_lot_is_clamped_to_the_symbol_limits():
    p = plan({"steps": [{"risk_pct": 50}, {"lot": 0.001}, {"lot": 7.77}]})
    assert p.lot_size(1, 1, Decimal("10000"), Decimal("1"), COARSE) == Decimal("2.00")
    assert p.lot_size(1, 2, Decimal("10000"), Decimal("1"), COARSE) == Decimal("0.10")
    assert p.lot_size(1, 3, Decimal("10000"), Decimal("1"), GOLD) == Decimal("7.77")


def test_a_risk_step_needs_a_loss_to_size_from():
    p = plan({"steps": [{"risk_pct": 1}]})
    with pytest.raises(PlanError):
        p.lot_size(1, 1, Decimal("10000"), Decimal("0"), GOLD)


def test_the_shipped_plans_load():
    assert {"default", "fixed", "martingale", "paroli", "fixed-risk"} <= set(plan_names())
    default = load_plan("default")
    assert [len(p.steps) for p in default.phases] == [3, 3, 3]
    assert [p.target_pct for p in default.phases] == [Decimal(10), Decimal(5), None]
    assert (default.time_zone, default.day_reset_hour) == ("Europe/Prague", 0)
    # the ladder alone: a profit restores full risk (the target moves the phase)
    assert default.next_position(1, 2, "profit") == (1, 1)
    assert default.next_position(1, 1, "loss") == (1, 2)
    assert default.next_position(1, 3, "loss") == (1, 3)
    fixed = load_plan("fixed")
    assert fixed.lot_size(5, 5, Decimal(1), Decimal(0), GOLD) == Decimal("0.01")
    assert [(p.target_pct, p.max_daily_loss_pct, p.max_loss_pct) for p in fixed.phases] == [(None, None, None)]


def test_the_old_format_maps_onto_the_new_actions():
    old = plan_from_dict({
        "after_last_step": "reset",
        "phases": [{"on_profit": "stay", "on_loss": "next_step", "steps": [{"lot": 1}, {"lot": 2}]}],
    })
    assert (old.phases[0].on_profit, old.phases[0].on_loss, old.phases[0].past_max_steps) == ("hold", "next", "reset")
    assert old.next_position(1, 2, "loss") == (1, 1)


def test_a_plan_file_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[[phases]]\nsteps = [{ lot = 0.05 }]\n')
    assert load_plan(str(path)).lot_size(1, 1, 0, 0, GOLD) == Decimal("0.05")


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("phases = []", "at least one"),
        ("[[phases]]\nsteps = []", "at least one step"),
        ("[[phases]]\nsteps = [{ lot = 0.1, risk_pct = 1 }]", "exactly one"),
        ("[[phases]]\nsteps = [{}]", "exactly one"),
        ("[[phases]]\nsteps = [{ lot = -1 }]", "more than 0"),
        ("[[phases]]\nsteps = [{ risk_pct = 101 }]", "over 100"),
        ("[[phases]]\non_loss = 'double'\nsteps = [{ lot = 1 }]", "on_loss"),
        ("after_last_step = 'next_step'\n[[phases]]\nsteps = [{ lot = 1 }]", "after_last_step"),
        ("[[phases]]\nsteps = [{ lot = 1, multiplier = 2 }]", "exactly one"),
        ("[[phases]]\nsteps = [{ multiplier = 0 }]", "more than 0"),
        ("[[phases]]\nmax_steps = 3\nsteps = [{ lot = 1 }]", "max_steps"),
        ("[[phases]]\npast_max_steps = 'next'\nsteps = [{ lot = 1 }]", "past_max_steps"),
        ("[[phases]]\nmax_loss_mode = 'rolling'\nsteps = [{ lot = 1 }]", "max_loss_mode"),
        ("[[phases]]\nmax_daily_loss_pct = 150\nsteps = [{ lot = 1 }]", "over 100"),
        ("[[phases]]\nmax_loss_pct = 0\nsteps = [{ lot = 1 }]", "more than 0"),
        ("[[phases]]\ntarget_pct = 'ten'\nsteps = [{ lot = 1 }]", "target_pct"),
        ("[[phases]]\nmin_trading_days = -1\nsteps = [{ lot = 1 }]", "min_trading_days"),
        ("[[phases]]\nclose_on_breach = 'yes'\nsteps = [{ lot = 1 }]", "close_on_breach"),
        ("time_zone = 'Mars/Olympus'\n[[phases]]\nsteps = [{ lot = 1 }]", "unknown time_zone"),
        ("time_zone = 'UTC+30'\n[[phases]]\nsteps = [{ lot = 1 }]", "out of range"),
        ("day_reset_hour = 24\n[[phases]]\nsteps = [{ lot = 1 }]", "day_reset_hour"),
        ("colour = 'red'\n[[phases]]\nsteps = [{ lot = 1 }]", "unknown key"),
        ("[[phases]\n", "not valid TOML"),
    ],
)
def test_a_malformed_plan_gets_a_one_line_error(tmp_path, text, complaint):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PlanError) as caught:
        load_plan(str(path))
    assert complaint in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_plans_are_named_in_the_error(tmp_path):
    with pytest.raises(PlanError, match="unknown plan 'nope'"):
        load_plan("nope")
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(str(tmp_path / "missing.toml"))

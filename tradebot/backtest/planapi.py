"""
The plan-engine interface the backtester calls, and `LegacyPlanEngine`, an
interim engine on today's `tradebot.plan.Plan`.

`PlanState`, `PlanEvent` and `Entry` mirror those of ``tradebot.risk`` (issue
4's shared interface) field for field; once ``tradebot.risk`` lands, its
``PlanEngine`` replaces `LegacyPlanEngine` and these value types are imported
from there. The backtester reads only ``phase``, ``step`` and ``status`` of a
state and the documented fields of events and entries.
"""

import datetime
from decimal import Decimal
from typing import List, Optional, Tuple

import attrs

from tradebot import plan as plans

ACTIVE = "active"


@attrs.frozen
class PlanState:
    """Everything a plan remembers for one account (see tradebot.risk)."""

    phase: int
    step: int
    phase_start_balance: Decimal
    day: str
    day_start_balance: Decimal
    peak_eod_balance: Decimal
    trading_days: int
    last_trading_day: Optional[str]
    status: str


@attrs.frozen
class PlanEvent:
    """A phase change, breach, day rollover or step change (see tradebot.risk)."""

    kind: str
    at: float
    phase: int
    step: int
    balance: Decimal
    equity: Decimal
    detail: str


@attrs.frozen
class Entry:
    """The lot to open (None: skip) and why it was skipped or cut."""

    lot: Optional[Decimal]
    reason: Optional[str]


def _day(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date().isoformat()


class LegacyPlanEngine:
    """The `PlanEngine` interface on today's `Plan`: the step's lot
    (`Plan.lot_size`), the step ladder (`Plan.next_position`); no loss
    limits, never skips, status always ``active``. Each step or phase change
    is reported as a ``step_changed`` or ``phase_passed`` event."""

    def __init__(self, plan: plans.Plan):
        self.plan = plan

    def start(self, balance, now) -> PlanState:
        """Phase 1, step 1, the day of `now`."""
        balance = Decimal(balance)
        return PlanState(1, 1, balance, _day(now), balance, balance, 0, None, ACTIVE)

    def update(self, state: PlanState, balance, equity, now, open_trades: int) -> Tuple[PlanState, List[PlanEvent]]:
        """Follow the trading day; no limits, so no events."""
        day = _day(now)
        if day != state.day:
            state = attrs.evolve(state, day=day, day_start_balance=Decimal(balance))
        return state, []

    def entry(self, state: PlanState, balance, equity, loss_per_lot, spec, now) -> Entry:
        """The step's lot, never cut nor skipped."""
        return Entry(self.plan.lot_size(state.phase, state.step, balance, Decimal(loss_per_lot), spec), None)

    def opened(self, state: PlanState, now) -> PlanState:
        """Count the trading day."""
        day = _day(now)
        if state.last_trading_day == day:
            return state
        return attrs.evolve(state, trading_days=state.trading_days + 1, last_trading_day=day)

    def closed(self, state: PlanState, result: str, balance, now) -> Tuple[PlanState, List[PlanEvent]]:
        """Move along the ladder for `result` (plan.PROFIT or plan.LOSS)."""
        phase, step = self.plan.next_position(state.phase, state.step, result)
        if (phase, step) == (state.phase, state.step):
            return state, []
        balance = Decimal(balance)
        if phase != state.phase:
            new = attrs.evolve(state, phase=phase, step=step, phase_start_balance=balance, trading_days=0,
                               peak_eod_balance=balance, last_trading_day=None)
            kind, detail = "phase_passed", f"phase {state.phase} -> {phase}"
        else:
            new = attrs.evolve(state, step=step)
            kind, detail = "step_changed", f"step {state.step} -> {step}"
        return new, [PlanEvent(kind, float(now), phase, step, balance, balance, detail)]

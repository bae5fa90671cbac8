"""
What a plan remembers and reports for one account, as values: `PlanState` (persisted
live), the `PlanEvent`s a change makes, the `Entry` that sizes the next trade, the
`Headroom` under each loss limit, and the names of the statuses and event kinds
(docs/plans.md). `tradebot.plans.engine.PlanEngine` computes them.
"""

from decimal import Decimal
from typing import Optional

import attrs

ACTIVE = "active"
PAUSED_TODAY = "paused_today"
FAILED = "failed"
COMPLETED = "completed"
STATUSES = (ACTIVE, PAUSED_TODAY, FAILED, COMPLETED)

DAY_ROLLOVER = "day_rollover"
DAILY_BREACH = "daily_breach"
MAX_LOSS_BREACH = "max_loss_breach"
PHASE_PASSED = "phase_passed"
PHASE_FAILED = "phase_failed"
STEP_CHANGED = "step_changed"
#: The operator set the phase, the initial capital or the reference balance.
PLAN_SET = "plan_set"
EVENT_KINDS = (DAY_ROLLOVER, DAILY_BREACH, MAX_LOSS_BREACH, PHASE_PASSED, PHASE_FAILED, STEP_CHANGED, PLAN_SET)


@attrs.frozen
class PlanState:
    """Everything a plan remembers for one account (persisted live).
    `phase_start_balance` is the reference balance (the broker balance that
    stood for `initial_capital` when the phase started); `day_start_equity`
    the equity at the day's start, as known (else its balance)."""

    phase: int
    step: int
    phase_start_balance: Decimal
    day: str
    day_start_balance: Decimal
    peak_eod_balance: Decimal
    trading_days: int
    last_trading_day: Optional[str]
    status: str
    initial_capital: Decimal = attrs.field(default=None)
    day_start_equity: Decimal = attrs.field(default=None)

    def __attrs_post_init__(self):
        # states stored before these were kept: the phase's start, the day's balance
        if self.initial_capital is None:
            object.__setattr__(self, "initial_capital", self.phase_start_balance)
        if self.day_start_equity is None:
            object.__setattr__(self, "day_start_equity", self.day_start_balance)


@attrs.frozen
class PlanEvent:
    """A phase change, a breach, a day rollover or a step change, with the
    balance and equity that caused it."""

    kind: str
    at: float
    phase: int
    step: int
    balance: Decimal
    equity: Decimal
    detail: str


@attrs.frozen
class Entry:
    """The answer to "may I open a trade, and how big?": `lot` None skips it;
    `reason` says why it was skipped or cut (None otherwise)."""

    lot: Optional[Decimal]
    reason: Optional[str]


@attrs.frozen
class Headroom:
    """How much more may be lost before each limit (None: no such limit)."""

    daily: Optional[Decimal]
    overall: Optional[Decimal]

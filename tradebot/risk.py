"""
The plan engine: a plan's targets, loss limits and step ladder applied to one
account, as pure functions of a `PlanState` (no I/O, no clock: times come in
as epoch seconds, money as `Decimal`). The live sessions and the backtester
call the same code.

- `update` rolls the trading day over, pauses the day when equity falls below
  the daily limit, fails the phase below the overall limit, and passes the
  phase at its target (only with no open trade and `min_trading_days` met);
- `entry` sizes the next trade: the step's lot, cut so that its loss at the
  stop loss fits the headroom under both limits; skipped when even the
  symbol's minimum volume would not fit, or when the status forbids trading;
- `opened` counts the trading day; `closed` moves the step ladder and judges
  the new balance.

Statuses: ``active``; ``paused_today`` (the daily limit was hit: no entry
until the next day); ``failed`` (the maximum loss was hit: no entry again);
``completed`` (the last phase reached its target: the plan holds there and
opens nothing more).

A limit is breached when equity goes *below* it: a loss that reaches it
exactly, which is the most `entry` allows, is not a breach.
"""

from decimal import ROUND_DOWN, Decimal
from typing import List, Optional, Tuple

import attrs

from tradebot.plan import LOSS, NEXT_PHASE, PROFIT, TRAILING, Plan

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
EVENT_KINDS = (DAY_ROLLOVER, DAILY_BREACH, MAX_LOSS_BREACH, PHASE_PASSED, PHASE_FAILED, STEP_CHANGED)

_CENT = Decimal("0.01")


@attrs.frozen
class PlanState:
    """Everything a plan remembers for one account (persisted live)."""

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


class PlanEngine:
    """A `tradebot.plan.Plan` applied to account states."""

    def __init__(self, plan: Plan):
        self.plan = plan

    # -- limits ----------------------------------------------------------------

    def daily_floor(self, state: PlanState) -> Optional[Decimal]:
        """The equity under which the day is paused, or None."""
        pct = self.plan.phase_at(state.phase).max_daily_loss_pct
        return None if pct is None else state.day_start_balance * (1 - pct / 100)

    def overall_floor(self, state: PlanState) -> Optional[Decimal]:
        """The equity under which the phase fails, or None: from the phase's
        starting balance (static) or the highest end-of-day one (trailing)."""
        phase = self.plan.phase_at(state.phase)
        if phase.max_loss_pct is None:
            return None
        base = state.peak_eod_balance if phase.max_loss_mode == TRAILING else state.phase_start_balance
        return base * (1 - phase.max_loss_pct / 100)

    def target(self, state: PlanState) -> Optional[Decimal]:
        """The balance that passes the phase, or None."""
        pct = self.plan.phase_at(state.phase).target_pct
        return None if pct is None else state.phase_start_balance * (1 + pct / 100)

    def headroom(self, state: PlanState, balance, equity) -> Headroom:
        """What may still be lost before each limit, from the lower of the
        balance and the equity (never below 0)."""
        base = min(Decimal(balance), Decimal(equity))
        daily, overall = self.daily_floor(state), self.overall_floor(state)
        return Headroom(
            daily=None if daily is None else max(base - daily, Decimal(0)),
            overall=None if overall is None else max(base - overall, Decimal(0)),
        )

    # -- the interface -----------------------------------------------------------

    def start(self, balance, now: float) -> PlanState:
        """The state of an account starting the plan at phase 1, step 1."""
        balance = Decimal(balance)
        return PlanState(
            phase=1,
            step=1,
            phase_start_balance=balance,
            day=self.plan.day_of(now),
            day_start_balance=balance,
            peak_eod_balance=balance,
            trading_days=0,
            last_trading_day=None,
            status=ACTIVE,
        )

    def update(
        self, state: PlanState, balance, equity, now: float, open_trades: int
    ) -> Tuple[PlanState, List[PlanEvent]]:
        """Roll the day over, then judge `equity` against the limits and
        `balance` against the target."""
        balance, equity = Decimal(balance), Decimal(equity)
        events: List[PlanEvent] = []
        state = self._roll_day(state, balance, equity, now, events)
        state = self._judge(state, balance, equity, now, open_trades, events)
        return state, events

    def entry(self, state: PlanState, balance, equity, loss_per_lot, spec, now: float) -> Entry:
        """The lot of the next trade, or a skip with its reason."""
        if state.status == FAILED:
            return Entry(None, f"phase {state.phase} failed: its maximum loss was reached")
        if state.status == PAUSED_TODAY:
            return Entry(None, "the daily loss limit was reached; trading resumes next day")
        if state.status == COMPLETED:
            return Entry(None, "the plan is completed: the last phase reached its target")
        balance, equity = Decimal(balance), Decimal(equity)
        loss_per_lot = Decimal(loss_per_lot)
        step = self.plan.step_at(state.phase, state.step)
        if step.risk_pct is not None and loss_per_lot <= 0:
            return Entry(None, "the stop loss puts nothing at risk, so a risk-based lot cannot be sized")
        lot = self.plan.lot_size(state.phase, state.step, balance, loss_per_lot, spec)
        room = self.headroom(state, balance, equity)
        limits = [(name, left) for name, left in (("daily", room.daily), ("overall", room.overall)) if left is not None]
        if not limits:
            return Entry(lot, None)
        if loss_per_lot <= 0:
            return Entry(None, "no stop loss to measure against the loss limits")
        name, left = min(limits, key=lambda item: item[1])
        fits = (left / loss_per_lot / spec.volume_step).to_integral_value(rounding=ROUND_DOWN) * spec.volume_step
        if fits >= lot:
            return Entry(lot, None)
        left_text = left.quantize(_CENT, rounding=ROUND_DOWN)
        if fits < spec.volume_min:
            return Entry(
                None,
                f"{spec.volume_min} lot would lose more than the {left_text} left under the {name} loss limit",
            )
        fits = min(fits, spec.volume_max).quantize(spec.volume_step)
        return Entry(fits, f"lot cut from {lot} to {fits} to fit the {left_text} left under the {name} loss limit")

    def opened(self, state: PlanState, now: float) -> PlanState:
        """`state` after a trade opened at `now`: the day counts as a trading day."""
        day = self.plan.day_of(now)
        if state.last_trading_day == day:
            return state
        return attrs.evolve(state, trading_days=state.trading_days + 1, last_trading_day=day)

    def closed(
        self, state: PlanState, result: str, balance, now: float, open_trades: int = 0
    ) -> Tuple[PlanState, List[PlanEvent]]:
        """Move the step ladder for a trade closed with `result` (``profit``
        or ``loss``), then judge the new `balance` (as equity too) against the
        limits and the target; `open_trades` are the trades still open."""
        if result not in (PROFIT, LOSS):
            raise ValueError(f"result must be {PROFIT!r} or {LOSS!r}, not {result!r}")
        balance = Decimal(balance)
        events: List[PlanEvent] = []
        state = self._roll_day(state, balance, balance, now, events)
        action = self.plan.action_after(state.phase, state.step, result)
        phase, step = self.plan.next_position(state.phase, state.step, result)
        if action == NEXT_PHASE and phase != state.phase:
            events.append(self._event(PHASE_PASSED, now, state, balance, balance,
                                      f"phase {state.phase} passed by the plan's next_phase action"))
            state = self._enter_phase(state, phase, balance)
        elif (phase, step) != (state.phase, state.step):
            events.append(self._event(STEP_CHANGED, now, attrs.evolve(state, step=step), balance, balance,
                                      f"{result}: step {state.step} -> {step}"))
            state = attrs.evolve(state, phase=phase, step=step)
        state = self._judge(state, balance, balance, now, open_trades, events)
        return state, events

    # -- the rules ---------------------------------------------------------------

    def _roll_day(self, state, balance, equity, now, events) -> PlanState:
        day = self.plan.day_of(now)
        if day <= state.day:
            return state
        # the balance at the first look of a new day closes the day before
        peak = max(state.peak_eod_balance, balance)
        status = ACTIVE if state.status == PAUSED_TODAY else state.status
        state = attrs.evolve(state, day=day, day_start_balance=balance, peak_eod_balance=peak, status=status)
        events.append(self._event(DAY_ROLLOVER, now, state, balance, equity, f"day {day} starts at balance {balance}"))
        return state

    def _judge(self, state, balance, equity, now, open_trades, events) -> PlanState:
        if state.status in (FAILED, COMPLETED):
            return state
        overall = self.overall_floor(state)
        if overall is not None and equity < overall:
            events.append(self._event(MAX_LOSS_BREACH, now, state, balance, equity,
                                      f"equity {equity} below the maximum loss limit {_money(overall)}"))
            events.append(self._event(PHASE_FAILED, now, state, balance, equity, f"phase {state.phase} failed"))
            return attrs.evolve(state, status=FAILED)
        daily = self.daily_floor(state)
        if state.status != PAUSED_TODAY and daily is not None and equity < daily:
            events.append(self._event(DAILY_BREACH, now, state, balance, equity,
                                      f"equity {equity} below the daily loss limit {_money(daily)}; "
                                      f"no new trade until day {state.day} ends"))
            return attrs.evolve(state, status=PAUSED_TODAY)
        target = self.target(state)
        phase = self.plan.phase_at(state.phase)
        if (
            target is not None
            and balance >= target
            and open_trades == 0
            and state.trading_days >= phase.min_trading_days
        ):
            last = state.phase >= len(self.plan.phases)
            detail = f"phase {state.phase} passed: balance {balance} reached the target {_money(target)}"
            events.append(self._event(PHASE_PASSED, now, state, balance, equity,
                                      detail + ("; the last phase holds" if last else "")))
            if last:
                return attrs.evolve(state, status=COMPLETED)
            return self._enter_phase(state, state.phase + 1, balance)
        return state

    def _enter_phase(self, state, phase: int, balance) -> PlanState:
        return attrs.evolve(
            state,
            phase=phase,
            step=1,
            phase_start_balance=balance,
            peak_eod_balance=balance,
            trading_days=0,
            last_trading_day=None,
            status=PAUSED_TODAY if state.status == PAUSED_TODAY else ACTIVE,
        )

    @staticmethod
    def _event(kind, now, state, balance, equity, detail) -> PlanEvent:
        return PlanEvent(kind, float(now), state.phase, state.step, balance, equity, detail)


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT)

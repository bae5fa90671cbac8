"""
The plan engine: a plan's targets, loss limits and step ladder applied to one
account, as pure functions of a `PlanState` (no I/O, no clock: times come in
as epoch seconds, money as `Decimal`). The live sessions and the backtester
call the same code.

Money is counted the way a prop firm counts it. The state holds the firm's
**initial capital** (`initial_capital`, the account size its percentages are
shares of) and the **reference balance** (`phase_start_balance`: the broker
balance that stood for the initial capital when the phase started). Targets
and the maximum loss are shares of the initial capital; the daily limit is a
share of what the plan's `daily_loss_basis` names. When the broker account is
the firm's account at its start, the two are the same number.

- `update` rolls the trading day over (with the balance and equity of the
  reset instant when the caller knows them: `at_reset`), pauses the day or
  fails the phase (the plan's `on_daily_breach`) when equity falls below the
  daily limit, fails the phase below the overall limit, and passes the phase
  at its target (only with no open trade and `min_trading_days` met);
- `entry` sizes the next trade: the step's lot, cut so that its loss at the
  stop loss fits the headroom under both limits, less the plan's safety
  buffer and the open trades' remaining risk to their stops; skipped when
  even the symbol's minimum volume would not fit, or when the status forbids
  trading;
- `opened` counts the trading day; `closed` moves the step ladder and judges
  the new balance and equity.

Statuses: ``active``; ``paused_today`` (the daily limit was hit: no entry
until the next day); ``failed`` (a limit the plan fails on was hit: no entry
again until the operator restarts the phase); ``completed`` (the last phase
reached its target: the plan holds there and opens nothing more).

A limit is breached when equity goes *below* it: a loss that reaches it
exactly, which is the most `entry` allows, is not a breach.
"""

from decimal import ROUND_DOWN, Decimal
from typing import List, Optional, Tuple

import attrs

from tradebot.plans.plan import DAY_START_MAX, FAIL, INITIAL, NEXT_PHASE, RESULTS, TRAILING, Plan
from tradebot.plans.state import (  # noqa: F401 (importable from here too)
    ACTIVE,
    COMPLETED,
    DAILY_BREACH,
    DAY_ROLLOVER,
    EVENT_KINDS,
    FAILED,
    MAX_LOSS_BREACH,
    PAUSED_TODAY,
    PHASE_FAILED,
    PHASE_PASSED,
    PLAN_SET,
    STATUSES,
    STEP_CHANGED,
    Entry,
    Headroom,
    PlanEvent,
    PlanState,
)

_CENT = Decimal("0.01")


class PlanEngine:
    """A `tradebot.plans.plan.Plan` applied to account states."""

    def __init__(self, plan: Plan):
        self.plan = plan

    # -- limits ----------------------------------------------------------------
    # Each limit is worked out in the firm's money (`_firm`: what the firm's
    # account would show) and brought back to the broker's (`_broker`).

    @staticmethod
    def _firm(state: PlanState, amount: Decimal) -> Decimal:
        return state.initial_capital + (amount - state.phase_start_balance)

    @staticmethod
    def _broker(state: PlanState, amount: Decimal) -> Decimal:
        return state.phase_start_balance + (amount - state.initial_capital)

    def daily_floor(self, state: PlanState) -> Optional[Decimal]:
        """The equity under which the daily limit is breached, or None: the
        day's starting balance less the percentage of the initial capital
        (``initial``), or that percentage less than the day's starting
        balance (``day_start``), or than the higher of its balance and
        equity (``day_start_max``)."""
        pct = self.plan.phase_at(state.phase).max_daily_loss_pct
        if pct is None:
            return None
        basis = self.plan.daily_loss_basis
        if basis == INITIAL:
            return state.day_start_balance - state.initial_capital * pct / 100
        start = self._firm(state, state.day_start_balance)
        if basis == DAY_START_MAX:
            start = max(start, self._firm(state, state.day_start_equity))
        return self._broker(state, start * (1 - pct / 100))

    def overall_floor(self, state: PlanState) -> Optional[Decimal]:
        """The equity under which the phase fails, or None: the initial
        capital less the percentage of it (static), or the higher of the
        highest end-of-day balance and the initial capital, less that
        percentage of the initial capital (trailing; with `trailing_lock`,
        never above the initial capital)."""
        phase = self.plan.phase_at(state.phase)
        if phase.max_loss_pct is None:
            return None
        allowance = state.initial_capital * phase.max_loss_pct / 100
        if phase.max_loss_mode != TRAILING:
            return state.phase_start_balance - allowance
        floor = max(state.peak_eod_balance, state.phase_start_balance) - allowance
        if self.plan.trailing_lock:
            floor = min(floor, state.phase_start_balance)
        return floor

    def target(self, state: PlanState) -> Optional[Decimal]:
        """The balance that passes the phase, or None: the reference balance
        plus the percentage of the initial capital."""
        pct = self.plan.phase_at(state.phase).target_pct
        return None if pct is None else state.phase_start_balance + state.initial_capital * pct / 100

    def buffer(self, state: PlanState) -> Decimal:
        """The money kept back under each limit when sizing."""
        return self.plan.safety_buffer + state.initial_capital * self.plan.safety_buffer_pct / 100

    def headroom(self, state: PlanState, balance, equity, open_risk=Decimal(0)) -> Headroom:
        """What a new trade may still lose before each limit: from the lower
        of the balance and the equity, less `open_risk` (what the open trades
        would still lose at their stops) and the safety buffer; never below 0."""
        base = min(Decimal(balance), Decimal(equity)) - Decimal(open_risk) - self.buffer(state)
        daily, overall = self.daily_floor(state), self.overall_floor(state)
        return Headroom(
            daily=None if daily is None else max(base - daily, Decimal(0)),
            overall=None if overall is None else max(base - overall, Decimal(0)),
        )

    # -- the interface -----------------------------------------------------------

    def start(self, balance, now: float) -> PlanState:
        """The state of an account starting the plan at phase 1, step 1, its
        balance standing for the initial capital."""
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
            initial_capital=balance,
            day_start_equity=balance,
        )

    def update(
        self, state: PlanState, balance, equity, now: float, open_trades: int, at_reset=None
    ) -> Tuple[PlanState, List[PlanEvent]]:
        """Roll the day over, then judge `equity` against the limits and
        `balance` against the target. `at_reset` is (balance, equity) at the
        instant the current trading day began, when the caller knows them: a
        day that rolls over here starts from them (else from `balance` and
        `equity` now, which may hold what happened since)."""
        balance, equity = Decimal(balance), Decimal(equity)
        events: List[PlanEvent] = []
        state = self._roll_day(state, balance, equity, now, events, at_reset)
        state = self._judge(state, balance, equity, now, open_trades, events)
        return state, events

    def entry(self, state: PlanState, balance, equity, loss_per_lot, spec, now: float, open_risk=Decimal(0)) -> Entry:
        """The lot of the next trade, or a skip with its reason. `open_risk`
        is what the trades already open would still lose at their stops."""
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
        if lot is None:
            return Entry(
                None,
                f"a {step.risk_pct}% risk is less than the minimum volume {spec.volume_min} "
                "(the plan does not round up to it)",
            )
        room = self.headroom(state, balance, equity, open_risk)
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
        self, state: PlanState, result: str, balance, now: float, open_trades: int = 0, equity=None, at_reset=None
    ) -> Tuple[PlanState, List[PlanEvent]]:
        """Move the step ladder for a trade closed with `result` (``profit``,
        ``loss`` or ``breakeven``), then judge the new `equity` (the balance
        with the floating result of the `open_trades` still open; `balance`
        when None) against the limits and the `balance` against the target.
        `at_reset` as for `update`."""
        if result not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
        balance = Decimal(balance)
        equity = balance if equity is None else Decimal(equity)
        events: List[PlanEvent] = []
        state = self._roll_day(state, balance, equity, now, events, at_reset)
        action = self.plan.action_after(state.phase, state.step, result)
        phase, step = self.plan.next_position(state.phase, state.step, result)
        if action == NEXT_PHASE and phase != state.phase:
            events.append(self._event(PHASE_PASSED, now, state, balance, equity,
                                      f"phase {state.phase} passed by the plan's next_phase action"))
            state = self._enter_phase(state, phase, balance, equity)
        elif (phase, step) != (state.phase, state.step):
            events.append(self._event(STEP_CHANGED, now, attrs.evolve(state, step=step), balance, equity,
                                      f"{result}: step {state.step} -> {step}"))
            state = attrs.evolve(state, phase=phase, step=step)
        state = self._judge(state, balance, equity, now, open_trades, events)
        return state, events

    def set(
        self, state: PlanState, now: float, phase=None, initial_capital=None, reference_balance=None,
        restart: bool = False,
    ) -> Tuple[PlanState, List[PlanEvent]]:
        """What the operator sets: the phase (started afresh at step 1), the
        initial capital, the reference balance (the broker balance standing
        for the initial capital), or a restart of the phase (a failed or
        completed one trades again, its days counted from 0). One
        ``plan_set`` event says what changed."""
        changes = []
        if phase is not None:
            phase = self.plan.position(phase, 1)[0]
            state = attrs.evolve(state, phase=phase, step=1, trading_days=0, last_trading_day=None, status=ACTIVE)
            changes.append(f"phase {phase}")
        if initial_capital is not None:
            state = attrs.evolve(state, initial_capital=Decimal(initial_capital))
            changes.append(f"initial capital {initial_capital}")
        if reference_balance is not None:
            reference = Decimal(reference_balance)
            state = attrs.evolve(state, phase_start_balance=reference, peak_eod_balance=reference)
            changes.append(f"reference balance {reference}")
        if restart:
            state = attrs.evolve(state, status=ACTIVE, trading_days=0, last_trading_day=None)
            changes.append("phase restarted")
        if not changes:
            return state, []
        event = self._event(PLAN_SET, now, state, state.day_start_balance, state.day_start_equity,
                            "set by the operator: " + ", ".join(changes))
        return state, [event]

    # -- the rules ---------------------------------------------------------------

    def _roll_day(self, state, balance, equity, now, events, at_reset=None) -> PlanState:
        day = self.plan.day_of(now)
        if day <= state.day:
            return state
        if at_reset is not None:  # what the account held at the reset instant
            balance, equity = Decimal(at_reset[0]), Decimal(at_reset[1])
        # the balance the new day starts with closes the day before
        peak = max(state.peak_eod_balance, balance)
        status = ACTIVE if state.status == PAUSED_TODAY else state.status
        state = attrs.evolve(
            state, day=day, day_start_balance=balance, day_start_equity=equity, peak_eod_balance=peak, status=status
        )
        events.append(self._event(DAY_ROLLOVER, now, state, balance, equity,
                                  f"day {day} starts at balance {balance}, equity {equity}"))
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
            if self.plan.on_daily_breach == FAIL:
                events.append(self._event(DAILY_BREACH, now, state, balance, equity,
                                          f"equity {equity} below the daily loss limit {_money(daily)}"))
                events.append(self._event(PHASE_FAILED, now, state, balance, equity, f"phase {state.phase} failed"))
                return attrs.evolve(state, status=FAILED)
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
            return self._enter_phase(state, state.phase + 1, balance, equity)
        return state

    def _enter_phase(self, state, phase: int, balance, equity) -> PlanState:
        """`state` in `phase` from now, `balance` standing for its start:
        the initial capital again (``next_phase_from = "initial"``: the
        firm's new account, whose day starts now too) or that balance."""
        fresh = self.plan.next_phase_from == INITIAL
        return attrs.evolve(
            state,
            phase=phase,
            step=1,
            phase_start_balance=balance,
            initial_capital=state.initial_capital if fresh else balance,
            peak_eod_balance=balance,
            day_start_balance=balance if fresh else state.day_start_balance,
            day_start_equity=equity if fresh else state.day_start_equity,
            trading_days=0,
            last_trading_day=None,
            status=PAUSED_TODAY if state.status == PAUSED_TODAY and not fresh else ACTIVE,
        )

    @staticmethod
    def _event(kind, now, state, balance, equity, detail) -> PlanEvent:
        return PlanEvent(kind, float(now), state.phase, state.step, balance, equity, detail)


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT)

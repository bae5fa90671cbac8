"""
Money-management plans: an ordered list of phases, each with a profit target,
loss limits and a step ladder that sets the next trade's size.

A phase (see docs/plans.md for the file format):

- `target_pct`: the profit over the phase's starting balance that passes it
  (with every trade closed and `min_trading_days` met); the last phase holds;
- `max_daily_loss_pct`: the equity loss against the day's starting balance
  that pauses trading for the rest of the day; the day starts at the plan's
  `day_reset_hour` in its `time_zone`;
- `max_loss_pct`: the equity loss that fails the phase, measured from the
  phase's starting balance (`max_loss_mode = "static"`) or from the highest
  end-of-day balance (``"trailing"``);
- `close_on_breach`: close what is open when a limit is breached;
- a ladder of steps: each sets a `lot`, a `risk_pct` of the balance at the stop
  loss, or a `multiplier` of the phase's `base_lot`. After each closed trade
  the step's (or the phase's) `on_profit` / `on_loss` action moves it:
  ``next``, ``reset`` (step 1), ``prev``, ``hold``. ``next`` on step
  `max_steps` does `past_max_steps` instead (``hold``, ``reset`` or ``prev``).

Older plan files still load: ``next_step`` means ``next``, ``stay`` means
``hold``, a plan-wide `after_last_step` is each phase's `past_max_steps`, and
``next_phase`` (an action of the old format) moves to step 1 of the next phase.
A phase without `target_pct` or limits has no target and no limits.

Phases and steps are numbered from 1, as stored and as reported in message 3.
Plans are read from their files by `tradebot.plans.files.load_plan`; the
limits themselves are applied by `tradebot.plans.engine.PlanEngine`.
"""

import datetime
import functools
import re
from decimal import Decimal
from typing import Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

NEXT = "next"
RESET = "reset"
PREV = "prev"
HOLD = "hold"
#: The old format's action: step 1 of the next phase (the last phase restarts at its step 1).
NEXT_PHASE = "next_phase"
ACTIONS = (NEXT, RESET, PREV, HOLD, NEXT_PHASE)
#: What `next` may do past a phase's last step.
PAST_MAX_STEPS = (HOLD, RESET, PREV, NEXT_PHASE)
#: The old format's names for the same actions.
ALIASES = {"next_step": NEXT, "stay": HOLD}
# kept for code written against the old names
NEXT_STEP = NEXT
STAY = HOLD

STATIC = "static"
TRAILING = "trailing"
MAX_LOSS_MODES = (STATIC, TRAILING)

PROFIT = "profit"
LOSS = "loss"
#: A trade that closed at exactly zero: the ladder's `on_breakeven` moves it.
BREAKEVEN = "breakeven"
RESULTS = (PROFIT, LOSS, BREAKEVEN)

#: What the daily loss limit is a share of (`daily_loss_basis`): the initial
#: capital, the floor being the day's starting balance less that share (FTMO,
#: FundedNext); the day's starting balance; or the higher of the balance and
#: the equity at the day's start (The5%ers).
INITIAL = "initial"
DAY_START = "day_start"
DAY_START_MAX = "day_start_max"
DAILY_BASES = (INITIAL, DAY_START, DAY_START_MAX)
#: What a breach of the daily loss limit does (`on_daily_breach`).
PAUSE = "pause"
FAIL = "fail"
ON_DAILY_BREACH = (PAUSE, FAIL)
#: Where the next phase's money is counted from (`next_phase_from`): the
#: balance the last phase ended at, or the initial capital (a new account at
#: the firm's size, as FTMO's Verification is).
BALANCE = "balance"
NEXT_PHASE_FROM = (BALANCE, INITIAL)


class PlanError(ValueError):
    """A plan is unknown or malformed; the message is one readable line."""


@attrs.frozen
class Step:
    """One rung of a phase's ladder: a fixed `lot`, `risk_pct` of the balance
    at the stop loss, or `multiplier` of the phase's base lot (exactly one).
    `on_profit` / `on_loss` override the phase's actions when set."""

    lot: Optional[Decimal] = None
    risk_pct: Optional[Decimal] = None
    multiplier: Optional[Decimal] = None
    on_profit: Optional[str] = None
    on_loss: Optional[str] = None
    on_breakeven: Optional[str] = None


@attrs.frozen
class Phase:
    """A phase: its ladder of steps, the actions a profit and a loss take, its
    target and its loss limits (None: none)."""

    name: str
    steps: Tuple[Step, ...]
    on_profit: str = NEXT
    on_loss: str = NEXT
    on_breakeven: str = HOLD
    max_steps: Optional[int] = None
    past_max_steps: str = HOLD
    base_lot: Optional[Decimal] = None
    target_pct: Optional[Decimal] = None
    max_daily_loss_pct: Optional[Decimal] = None
    max_loss_pct: Optional[Decimal] = None
    max_loss_mode: str = STATIC
    min_trading_days: int = 0
    close_on_breach: bool = False

    @property
    def last_step(self) -> int:
        """The highest step this phase's ladder reaches."""
        return min(self.max_steps or len(self.steps), len(self.steps))


@attrs.frozen
class Plan:
    """A whole money-management plan."""

    name: str
    phases: Tuple[Phase, ...]
    description: str = ""
    day_reset_hour: int = 0
    time_zone: str = "UTC"
    daily_loss_basis: str = DAY_START
    on_daily_breach: str = PAUSE
    next_phase_from: str = BALANCE
    #: Money kept back under each limit when sizing (a fixed amount, or a
    #: share of the initial capital): for commission, swap, slippage and the
    #: time a stop takes to be seen.
    safety_buffer: Decimal = Decimal(0)
    safety_buffer_pct: Decimal = Decimal(0)
    #: A trailing maximum loss stops rising at the phase's starting balance.
    trailing_lock: bool = False
    #: A risk step whose lot rounds below the minimum volume trades the
    #: minimum (risking more than asked) instead of being skipped.
    round_up_to_min_volume: bool = False

    def position(self, phase: int, step: int) -> Tuple[int, int]:
        """(`phase`, `step`) clamped into this plan, so an account whose plan
        changed under it still has a valid place."""
        phase = min(max(int(phase), 1), len(self.phases))
        step = min(max(int(step), 1), self.phases[phase - 1].last_step)
        return phase, step

    def phase_at(self, phase: int) -> Phase:
        """The phase numbered `phase`, clamped into the plan."""
        return self.phases[self.position(phase, 1)[0] - 1]

    def step_at(self, phase: int, step: int) -> Step:
        """The step at (`phase`, `step`), clamped into the plan."""
        phase, step = self.position(phase, step)
        return self.phases[phase - 1].steps[step - 1]

    def tzinfo(self) -> datetime.tzinfo:
        """The time zone the plan's trading day is counted in."""
        return zone_from_name(self.time_zone, "plan")  # cached: a backtest asks once a bar

    def day_of(self, now: float) -> str:
        """The trading day (ISO date) that epoch second `now` falls in: the
        date on the plan's wall clock, `day_reset_hour` hours behind."""
        local = datetime.datetime.fromtimestamp(now, self.tzinfo()).replace(tzinfo=None)
        return (local - datetime.timedelta(hours=self.day_reset_hour)).date().isoformat()

    def day_start(self, day: str) -> float:
        """The epoch second trading day `day` (ISO date) starts: its date at
        `day_reset_hour` on the plan's wall clock."""
        local = datetime.datetime.fromisoformat(day) + datetime.timedelta(hours=self.day_reset_hour)
        return local.replace(tzinfo=self.tzinfo()).timestamp()

    def lot_size(self, phase: int, step: int, balance, loss_per_lot, spec) -> Optional[Decimal]:
        """The lot for the next trade at (`phase`, `step`), before any loss
        limit: the step's `lot`, its `multiplier` of the phase's base lot, or
        the volume whose loss at the stop loss is `risk_pct` of `balance` given
        `loss_per_lot` (the loss of one lot at the stop, positive); rounded
        down to the symbol's volume step and clamped to its limits. A risk
        lot that rounds below the minimum volume is None (the trade would
        risk more than the step allows), unless `round_up_to_min_volume`.
        Raises `PlanError` if a risk step has no loss per lot to size from."""
        chosen = self.step_at(phase, step)
        if chosen.lot is not None:
            return spec.round_volume(chosen.lot)
        if chosen.multiplier is not None:
            base = self.phase_at(phase).base_lot
            return spec.round_volume((base if base is not None else spec.volume_min) * chosen.multiplier)
        loss_per_lot = Decimal(str(loss_per_lot))
        if loss_per_lot <= 0:
            raise PlanError("the stop loss puts nothing at risk, so a risk-based lot cannot be sized")
        at_risk = Decimal(str(balance)) * chosen.risk_pct / 100
        wanted = at_risk / loss_per_lot
        if wanted < spec.volume_min and not self.round_up_to_min_volume:
            return None
        return spec.round_volume(wanted)

    def action_after(self, phase: int, step: int, result: str) -> str:
        """The action a trade closed with `result` at (`phase`, `step`) takes,
        with `next` on the last step already replaced by `past_max_steps`."""
        if result not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
        phase, step = self.position(phase, step)
        current = self.phases[phase - 1]
        rung = current.steps[step - 1]
        if result == PROFIT:
            action = rung.on_profit or current.on_profit
        elif result == LOSS:
            action = rung.on_loss or current.on_loss
        else:
            action = rung.on_breakeven or current.on_breakeven
        if action == NEXT and step >= current.last_step:
            action = current.past_max_steps
        return action

    def next_position(self, phase: int, step: int, result: str) -> Tuple[int, int]:
        """Where a trade closed with `result` (``profit``, ``loss`` or ``breakeven``) at
        (`phase`, `step`) moves the account on the ladder."""
        action = self.action_after(phase, step, result)
        phase, step = self.position(phase, step)
        if action == NEXT:
            return phase, step + 1
        if action == RESET:
            return phase, 1
        if action == PREV:
            return phase, max(step - 1, 1)
        if action == NEXT_PHASE:
            return min(phase + 1, len(self.phases)), 1
        return phase, step


_OFFSET = re.compile(r"^UTC([+-])(\d{1,2})(?::(\d{2}))?$")


@functools.lru_cache(maxsize=64)
def zone_from_name(name: str, where: str) -> datetime.tzinfo:
    """The time zone an IANA name (``Europe/Prague``) or a fixed offset (``UTC+3``)
    names; raises `PlanError`, naming `where`, for anything else."""
    match = _OFFSET.match(name)
    if match:
        sign = 1 if match.group(1) == "+" else -1
        hours, minutes = int(match.group(2)), int(match.group(3) or 0)
        if hours > 14 or minutes > 59:
            raise PlanError(f"{where}: time_zone offset {name!r} is out of range")
        return datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(f"{where}: unknown time_zone {name!r} (an IANA name such as \"Europe/Prague\", or \"UTC+3\")")



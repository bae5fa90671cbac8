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
A name looks up a plan shipped in ``tradebot/plans``, anything with a slash
or ending in ``.toml`` is a path. The limits themselves are applied by
`tradebot.plans.engine.PlanEngine`.
"""

import datetime
import functools
import re
import sys
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Optional, Tuple

import attrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
        return _zone(self.time_zone, "plan")  # cached: a backtest asks once a bar

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


# -- loading ---------------------------------------------------------------------


def plan_names() -> Tuple[str, ...]:
    """The names of the plans shipped with tradebot."""
    folder = resources.files("tradebot.plans")
    return tuple(sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml")))


def load_plan(name_or_path: str) -> Plan:
    """The plan a shipped name (``default``) or a TOML file path names;
    raises `PlanError` when it is unknown, unreadable or malformed."""
    text, where = _read(str(name_or_path))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"plan {where} is not valid TOML: {e}")
    return plan_from_dict(document, where)


def _read(name_or_path: str) -> Tuple[str, str]:
    if "/" in name_or_path or "\\" in name_or_path or name_or_path.endswith(".toml"):
        try:
            return Path(name_or_path).read_text(encoding="utf-8"), name_or_path
        except OSError as e:
            raise PlanError(f"cannot read plan file {name_or_path}: {e.strerror}")
    if name_or_path not in plan_names():
        raise PlanError(f"unknown plan {name_or_path!r} (shipped: {', '.join(plan_names())}; or give a .toml path)")
    resource = resources.files("tradebot.plans").joinpath(name_or_path + ".toml")
    return resource.read_text(encoding="utf-8"), repr(name_or_path)


_PLAN_KEYS = {
    "name", "description", "after_last_step", "phases", "day_reset_hour", "time_zone", "daily_loss_basis",
    "on_daily_breach", "next_phase_from", "safety_buffer", "safety_buffer_pct", "trailing_lock",
    "round_up_to_min_volume", "sources",
}
_PHASE_KEYS = {
    "name", "on_profit", "on_loss", "on_breakeven", "steps", "max_steps", "past_max_steps", "base_lot",
    "target_pct", "max_daily_loss_pct", "max_loss_pct", "max_loss_mode", "min_trading_days", "close_on_breach",
}
_STEP_KEYS = {"lot", "risk_pct", "multiplier", "on_profit", "on_loss", "on_breakeven"}
_SIZES = ("lot", "risk_pct", "multiplier")


def plan_from_dict(document: dict, where: str = "plan") -> Plan:
    """Build and check a plan from its parsed TOML; raises `PlanError`."""
    _only(document, _PLAN_KEYS, where)
    # the old format's plan-wide action past the last step: each phase's default
    past = _action(document.get("after_last_step", HOLD), where, "after_last_step", PAST_MAX_STEPS)
    hour = document.get("day_reset_hour", 0)
    if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
        raise PlanError(f"{where}: day_reset_hour must be a whole hour from 0 to 23, not {hour!r}")
    time_zone = document.get("time_zone", "UTC")
    if not isinstance(time_zone, str):
        raise PlanError(f"{where}: time_zone must be a text such as \"Europe/Prague\" or \"UTC+3\"")
    _zone(time_zone, where)
    raw_phases = document.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise PlanError(f"{where}: a plan needs at least one [[phases]] entry")
    phases = tuple(_phase(raw, f"{where} phase {i}", past) for i, raw in enumerate(raw_phases, 1))
    if "safety_buffer" in document and "safety_buffer_pct" in document:
        raise PlanError(f"{where}: give safety_buffer (money) or safety_buffer_pct, not both")
    return Plan(
        name=str(document.get("name", where)),
        phases=phases,
        description=str(document.get("description", "")),
        day_reset_hour=hour,
        time_zone=time_zone,
        daily_loss_basis=_choice(document, "daily_loss_basis", DAILY_BASES, DAY_START, where),
        on_daily_breach=_choice(document, "on_daily_breach", ON_DAILY_BREACH, PAUSE, where),
        next_phase_from=_choice(document, "next_phase_from", NEXT_PHASE_FROM, BALANCE, where),
        safety_buffer=_zero_or_more(document, "safety_buffer", where),
        safety_buffer_pct=_percent(document, "safety_buffer_pct", where) or Decimal(0),
        trailing_lock=_flag(document, "trailing_lock", where),
        round_up_to_min_volume=_flag(document, "round_up_to_min_volume", where),
    )


def _choice(table: dict, key: str, allowed, default: str, where: str) -> str:
    value = table.get(key, default)
    if value not in allowed:
        raise PlanError(f"{where}: {key} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _flag(table: dict, key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise PlanError(f"{where}: {key} must be true or false")
    return value


def _zero_or_more(table: dict, key: str, where: str) -> Decimal:
    if key not in table or table[key] == 0:
        return Decimal(0)
    return _positive(table[key], where, key)


def _phase(raw, where: str, past: str) -> Phase:
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a table")
    _only(raw, _PHASE_KEYS, where)
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlanError(f"{where}: a phase needs at least one step")
    steps = tuple(_step(s, f"{where} step {i}") for i, s in enumerate(raw_steps, 1))
    max_steps = raw.get("max_steps")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= len(steps)
    ):
        raise PlanError(f"{where}: max_steps must be a whole number from 1 to the {len(steps)} step(s) listed")
    mode = raw.get("max_loss_mode", STATIC)
    if mode not in MAX_LOSS_MODES:
        raise PlanError(f"{where}: max_loss_mode must be one of {', '.join(MAX_LOSS_MODES)}, not {mode!r}")
    days = raw.get("min_trading_days", 0)
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise PlanError(f"{where}: min_trading_days must be a whole number, 0 or more")
    close = raw.get("close_on_breach", False)
    if not isinstance(close, bool):
        raise PlanError(f"{where}: close_on_breach must be true or false")
    base_lot = _positive(raw["base_lot"], where, "base_lot") if "base_lot" in raw else None
    return Phase(
        name=str(raw.get("name", where)),
        steps=steps,
        on_profit=_action(raw.get("on_profit", NEXT), where, "on_profit"),
        on_loss=_action(raw.get("on_loss", NEXT), where, "on_loss"),
        on_breakeven=_action(raw.get("on_breakeven", HOLD), where, "on_breakeven"),
        max_steps=max_steps,
        past_max_steps=_action(raw.get("past_max_steps", past), where, "past_max_steps", PAST_MAX_STEPS),
        base_lot=base_lot,
        target_pct=_percent(raw, "target_pct", where, allow_over_100=True),
        max_daily_loss_pct=_percent(raw, "max_daily_loss_pct", where),
        max_loss_pct=_percent(raw, "max_loss_pct", where),
        max_loss_mode=mode,
        min_trading_days=days,
        close_on_breach=close,
    )


def _step(raw, where: str) -> Step:
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a table")
    _only(raw, _STEP_KEYS, where)
    if sum(key in raw for key in _SIZES) != 1:
        raise PlanError(f"{where} needs exactly one of lot, risk_pct and multiplier")
    return Step(
        lot=_positive(raw["lot"], where, "lot") if "lot" in raw else None,
        risk_pct=_percent(raw, "risk_pct", where),
        multiplier=_positive(raw["multiplier"], where, "multiplier") if "multiplier" in raw else None,
        on_profit=_action(raw["on_profit"], where, "on_profit") if "on_profit" in raw else None,
        on_loss=_action(raw["on_loss"], where, "on_loss") if "on_loss" in raw else None,
        on_breakeven=_action(raw["on_breakeven"], where, "on_breakeven") if "on_breakeven" in raw else None,
    )


def _action(value, where: str, key: str, allowed=ACTIONS) -> str:
    value = ALIASES.get(value, value) if isinstance(value, str) else value
    if value not in allowed:
        raise PlanError(f"{where}: {key} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _percent(raw: dict, key: str, where: str, allow_over_100: bool = False) -> Optional[Decimal]:
    if key not in raw:
        return None
    number = _positive(raw[key], where, key)
    if number > 100 and not allow_over_100:
        raise PlanError(f"{where}: {key} cannot be over 100")
    return number


def _positive(value, where: str, key: str) -> Decimal:
    if isinstance(value, bool):
        raise PlanError(f"{where}: {key} must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PlanError(f"{where}: {key} must be a number, not {value!r}")
    if not number.is_finite() or number <= 0:
        raise PlanError(f"{where}: {key} must be more than 0")
    return number


_OFFSET = re.compile(r"^UTC([+-])(\d{1,2})(?::(\d{2}))?$")


@functools.lru_cache(maxsize=64)
def _zone(name: str, where: str) -> datetime.tzinfo:
    """An IANA zone (``Europe/Prague``) or a fixed offset (``UTC+3``)."""
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


def _only(table: dict, allowed: set, where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")

"""
Money-management plans: which lot the next trade takes, and where a profit or
a loss moves the account (its phase and step).

A plan is a list of phases; a phase is a list of steps. A step fixes the next
trade's size, either as a `lot` or as `risk_pct`, the percentage of the balance
lost if the stop loss is hit. After each closed trade the phase's (or the
step's own) `on_profit` / `on_loss` action moves the account:

- ``next_step``: the next step of the phase; past the last one, the plan's
  `after_last_step` action (``stay`` by default, or ``reset`` or ``next_phase``);
- ``reset``: step 1 of the same phase;
- ``next_phase``: step 1 of the next phase (the last phase restarts at its step 1);
- ``stay``: the same phase and step.

Phases and steps are numbered from 1, as stored and as reported in message 3.
Plans are TOML files: a name looks up a plan shipped in ``tradebot/plans``,
anything with a slash or ending in ``.toml`` is a path. See docs/plans.md.
"""

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

NEXT_STEP = "next_step"
RESET = "reset"
NEXT_PHASE = "next_phase"
STAY = "stay"
ACTIONS = (NEXT_STEP, RESET, NEXT_PHASE, STAY)
#: What may follow the last step of a phase.
AFTER_LAST_STEP = (STAY, RESET, NEXT_PHASE)

PROFIT = "profit"
LOSS = "loss"


class PlanError(ValueError):
    """A plan is unknown or malformed; the message is one readable line."""


@attrs.frozen
class Step:
    """One rung of a phase's ladder: a fixed `lot`, or `risk_pct` of the
    balance at the stop loss (exactly one of them). `on_profit` / `on_loss`
    override the phase's actions when set."""

    lot: Optional[Decimal] = None
    risk_pct: Optional[Decimal] = None
    on_profit: Optional[str] = None
    on_loss: Optional[str] = None


@attrs.frozen
class Phase:
    """A named ladder of steps with the actions a profit and a loss take."""

    name: str
    steps: Tuple[Step, ...]
    on_profit: str = NEXT_STEP
    on_loss: str = NEXT_STEP


@attrs.frozen
class Plan:
    """A whole money-management plan."""

    name: str
    phases: Tuple[Phase, ...]
    after_last_step: str = STAY
    description: str = ""

    def position(self, phase: int, step: int) -> Tuple[int, int]:
        """(`phase`, `step`) clamped into this plan, so an account whose plan
        changed under it still has a valid place."""
        phase = min(max(int(phase), 1), len(self.phases))
        step = min(max(int(step), 1), len(self.phases[phase - 1].steps))
        return phase, step

    def step_at(self, phase: int, step: int) -> Step:
        """The step at (`phase`, `step`), clamped into the plan."""
        phase, step = self.position(phase, step)
        return self.phases[phase - 1].steps[step - 1]

    def lot_size(self, phase: int, step: int, balance, loss_per_lot, spec) -> Decimal:
        """The lot for the next trade at (`phase`, `step`): the step's `lot`,
        or the volume whose loss at the stop loss is `risk_pct` of `balance`
        given `loss_per_lot` (the loss of one lot at the stop, positive);
        rounded down to the symbol's volume step and clamped to its limits.
        Raises `PlanError` if a risk step has no loss per lot to size from."""
        chosen = self.step_at(phase, step)
        if chosen.lot is not None:
            return spec.round_volume(chosen.lot)
        loss_per_lot = Decimal(str(loss_per_lot))
        if loss_per_lot <= 0:
            raise PlanError("the stop loss puts nothing at risk, so a risk-based lot cannot be sized")
        at_risk = Decimal(str(balance)) * chosen.risk_pct / 100
        return spec.round_volume(at_risk / loss_per_lot)

    def next_position(self, phase: int, step: int, result: str) -> Tuple[int, int]:
        """Where a trade closed with `result` (``profit`` or ``loss``) at
        (`phase`, `step`) moves the account."""
        if result not in (PROFIT, LOSS):
            raise ValueError(f"result must be {PROFIT!r} or {LOSS!r}, not {result!r}")
        phase, step = self.position(phase, step)
        current = self.phases[phase - 1]
        rung = current.steps[step - 1]
        if result == PROFIT:
            action = rung.on_profit or current.on_profit
        else:
            action = rung.on_loss or current.on_loss
        if action == NEXT_STEP and step == len(current.steps):
            action = self.after_last_step
            if action == STAY:
                return phase, step
        if action == NEXT_STEP:
            return phase, step + 1
        if action == RESET:
            return phase, 1
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


def plan_from_dict(document: dict, where: str = "plan") -> Plan:
    """Build and check a plan from its parsed TOML; raises `PlanError`."""
    _only(document, {"name", "description", "after_last_step", "phases"}, where)
    after = document.get("after_last_step", STAY)
    if after not in AFTER_LAST_STEP:
        raise PlanError(f"{where}: after_last_step must be one of {', '.join(AFTER_LAST_STEP)}, not {after!r}")
    raw_phases = document.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise PlanError(f"{where}: a plan needs at least one [[phases]] entry")
    phases = tuple(_phase(raw, f"{where} phase {i}") for i, raw in enumerate(raw_phases, 1))
    return Plan(
        name=str(document.get("name", where)),
        phases=phases,
        after_last_step=after,
        description=str(document.get("description", "")),
    )


def _phase(raw, where: str) -> Phase:
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a table")
    _only(raw, {"name", "on_profit", "on_loss", "steps"}, where)
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlanError(f"{where}: a phase needs at least one step")
    return Phase(
        name=str(raw.get("name", where)),
        steps=tuple(_step(s, f"{where} step {i}") for i, s in enumerate(raw_steps, 1)),
        on_profit=_action(raw.get("on_profit", NEXT_STEP), where, "on_profit"),
        on_loss=_action(raw.get("on_loss", NEXT_STEP), where, "on_loss"),
    )


def _step(raw, where: str) -> Step:
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a table")
    _only(raw, {"lot", "risk_pct", "on_profit", "on_loss"}, where)
    if ("lot" in raw) == ("risk_pct" in raw):
        raise PlanError(f"{where} needs exactly one of lot and risk_pct")
    lot = _positive(raw["lot"], where, "lot") if "lot" in raw else None
    risk = _positive(raw["risk_pct"], where, "risk_pct") if "risk_pct" in raw else None
    if risk is not None and risk > 100:
        raise PlanError(f"{where}: risk_pct cannot be over 100")
    return Step(
        lot=lot,
        risk_pct=risk,
        on_profit=_action(raw["on_profit"], where, "on_profit") if "on_profit" in raw else None,
        on_loss=_action(raw["on_loss"], where, "on_loss") if "on_loss" in raw else None,
    )


def _action(value, where: str, key: str) -> str:
    if value not in ACTIONS:
        raise PlanError(f"{where}: {key} must be one of {', '.join(ACTIONS)}, not {value!r}")
    return value


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


def _only(table: dict, allowed: set, where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")

"""
Reading plan files: a shipped plan by name (``default``) or a TOML file by path,
checked key by key into a `tradebot.plans.plan.Plan`; every mistake is a
`PlanError` naming the file, phase or step and the key.
"""

import sys
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tradebot.plans.plan import (
    ACTIONS,
    ALIASES,
    BALANCE,
    DAILY_BASES,
    DAY_START,
    HOLD,
    MAX_LOSS_MODES,
    NEXT,
    NEXT_PHASE_FROM,
    ON_DAILY_BREACH,
    PAST_MAX_STEPS,
    PAUSE,
    STATIC,
    Phase,
    Plan,
    PlanError,
    Step,
    zone_from_name,
)


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
    zone_from_name(time_zone, where)
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


def _only(table: dict, allowed: set, where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")

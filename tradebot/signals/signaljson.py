"""
The JSON form of a signal, read from an HTTP signal provider's answers and
from webhook alerts (docs/signals.md):

    {"action": "buy" | "sell" | "none", "sl": PRICE, "tp": PRICE,
     "sl_distance": DISTANCE, "tp_distance": DISTANCE, "comment": TEXT}

``action`` is required (any case; ``none`` or null: no trade); each stop is
given at most once, as a price or as a distance from the entry, as a JSON
number or a decimal string, more than 0 and less than a billion; a missing one comes from the
strategy's stops helper; ``comment`` is free text, ignored. Numbers are read
as Decimal, never through a float. Any other key is refused, so a misspelt
stop never trades without the stop its sender meant.
"""

import json
from decimal import Decimal, InvalidOperation
from typing import Dict, Iterable, Optional

import attrs

from tradebot.broker import BUY, SELL

#: The largest body read, in bytes.
MAX_BODY = 64 * 1024
#: Every stop price or distance is below this: no market is priced near it,
#: and a number like 1e999999 would become an infinity on its way to a float.
MAX_NUMBER = Decimal(10) ** 9

_ACTIONS = {"buy": BUY, "sell": SELL, "none": None}
#: JSON key -> `tradebot.signals.strategies.signal_with_stops` keyword.
_STOPS = {"sl": "stop_price", "tp": "take_price", "sl_distance": "stop_distance", "tp_distance": "take_distance"}


class BadSignal(ValueError):
    """A body that is not a signal; the message says what is wrong, in one
    line, and never quotes more than a key or a short value of it."""


@attrs.frozen
class SignalOrder:
    """What a signal's JSON asks for: the side (None: no trade) and the
    stops it gives, as `signal_with_stops` keywords."""

    side: Optional[str]
    stops: Dict[str, Decimal] = attrs.field(factory=dict)


def parse_object(body: bytes) -> dict:
    """The JSON object in `body`; `BadSignal` for anything else (too large,
    not UTF-8, not JSON, NaN or Infinity, not an object)."""
    if len(body) > MAX_BODY:
        raise BadSignal(f"the body is larger than {MAX_BODY} bytes")
    try:
        value = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadSignal("the body is not UTF-8 text")
    except RecursionError:
        raise BadSignal("the body is nested too deeply")
    except ValueError as e:  # JSONDecodeError, and _no_constant's
        raise BadSignal(f"the body is not JSON: {str(e)[:100]}")
    if not isinstance(value, dict):
        raise BadSignal("the body must be a JSON object")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a number")


def read_signal(obj: dict, also: Iterable[str] = ()) -> SignalOrder:
    """The `SignalOrder` in the JSON object `obj`; `BadSignal` if a key is
    unknown (other than the signal's own and those in `also`), the action is
    not one of buy, sell, none, or a stop is not a positive number or is
    given both as a price and as a distance."""
    known = {"action", "comment", *_STOPS, *also}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise BadSignal(f"unknown key {_short(unknown[0])} (known: {', '.join(sorted(known))})")
    if "action" not in obj:
        raise BadSignal('"action" is missing: "buy", "sell" or "none"')
    action = obj["action"]
    if action is None:
        action = "none"
    if not isinstance(action, str) or action.strip().lower() not in _ACTIONS:
        raise BadSignal(f'"action" must be "buy", "sell" or "none", not {_short(action)}')
    if "comment" in obj and not isinstance(obj["comment"], (str, type(None))):
        raise BadSignal('"comment" must be text')
    stops = {}
    for key, keyword in _STOPS.items():
        if key in obj and obj[key] is not None:
            stops[keyword] = _positive(key, obj[key])
    for kind, key in (("stop", "sl"), ("take", "tp")):
        if f"{kind}_price" in stops and f"{kind}_distance" in stops:
            raise BadSignal(f'give "{key}" or "{key}_distance", not both')
    return SignalOrder(_ACTIONS[action.strip().lower()], stops)


def _positive(key: str, value) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise BadSignal(f'"{key}" must be a number, not {_short(value)}')
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise BadSignal(f'"{key}" must be a number, not {_short(value)}')
    if not number.is_finite() or not number > 0:
        raise BadSignal(f'"{key}" must be more than 0, not {_short(value)}')
    if number >= MAX_NUMBER:
        raise BadSignal(f'"{key}" must be less than {MAX_NUMBER:,}, not {_short(value)}')
    return number


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."

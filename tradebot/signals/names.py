"""
Strategies by name: ``ma_cross``, ``rsi_reversal:period=14,low=30``,
``bollinger_breakout``, or an HTTP signal provider ``http:url=URL`` (the
``--strategy`` option). It stands above both the local strategies
(`tradebot.signals.strategies`) and the HTTP one (`tradebot.signals.remote`),
which uses the local stops helpers: neither imports the other's maker.
"""

import math
import re
from typing import Dict, Optional, Tuple

from tradebot.signals.strategies import AtrStops, BollingerBreakout, FixedStops, MovingAverageCross, RsiReversal

DEFAULT_STRATEGY = "ma_cross"

_STRATEGIES = {
    "ma_cross": (MovingAverageCross, {"fast": int, "slow": int}),
    "rsi_reversal": (RsiReversal, {"period": int, "low": float, "high": float}),
    "bollinger_breakout": (BollingerBreakout, {"period": int, "width": float}),
    # an external signal provider (tradebot.signals.remote), built by _http_strategy
    "http": (None, {"timeout": float, "candles": int, "retry": float}),
}
_STOPS = {
    "atr": (AtrStops, {"atr": ("period", int), "sl_atr": ("stop_multiple", float), "tp_atr": ("take_multiple", float)}),
    "fixed": (FixedStops, {"sl_points": ("stop_points", int), "tp_points": ("take_points", int)}),
}
STRATEGY_NAMES = tuple(_STRATEGIES)


#: ``url=`` starting an item: the URL runs from there to the end of the text.
_URL_ITEM = re.compile(r"(?:^|,)\s*url\s*=")


def _split_url(rest: str) -> Tuple[str, Optional[str]]:
    """(the parameters before ``url=``, the URL after it, or None)."""
    found = _URL_ITEM.search(rest)
    if found is None:
        return rest, None
    return rest[: found.start()], rest[found.end() :].strip()


def shown_strategy(text: str) -> str:
    """`text` as it may be logged or shown: the URL of an ``http`` strategy
    without its userinfo and query string (either may carry a secret)."""
    name, colon, rest = text.strip().partition(":")
    before, url = _split_url(rest)
    if url is None:
        return text.strip()
    from tradebot.signals.remote import redact_url

    return f"{name}{colon}{before}{',' if before.strip() else ''}url={redact_url(url)}"


def strategy_from_name(text: str, reactor=None):
    """The strategy ``name[:key=value,...]`` describes; raises ValueError with
    a readable message for an unknown name, key or value (naming an ``http``
    strategy's URL only redacted). `reactor` is what an ``http`` strategy
    makes its requests with (default: the global reactor)."""
    name, _, rest = text.strip().partition(":")
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGY_NAMES)})")
    url = None
    if name == "http":
        rest, url = _split_url(rest)
        if not url:
            raise ValueError("the http strategy needs url=URL, as its last parameter (e.g. http:timeout=3,url=https://...)")
    shown = shown_strategy(text)
    params = _parse_params(rest, shown)
    cls, own = _STRATEGIES[name]
    stops_name = params.pop("stops", "atr")
    if stops_name not in _STOPS:
        raise ValueError(f"unknown stops {stops_name!r} in {shown!r} (known: {', '.join(_STOPS)})")
    stops_cls, stop_keys = _STOPS[stops_name]
    kwargs, stop_kwargs = {}, {}
    for key, value in params.items():
        if key in own:
            kwargs[key] = _convert(own[key], key, value, shown)
        elif key in stop_keys:
            field, kind = stop_keys[key]
            stop_kwargs[field] = _convert(kind, key, value, shown)
            if stop_kwargs[field] <= 0:
                raise ValueError(f"{key} must be more than 0 in {shown!r}")
        else:
            known = ", ".join(list(own) + ["stops"] + list(stop_keys) + (["url"] if name == "http" else []))
            raise ValueError(f"unknown parameter {key!r} in {shown!r} (known: {known})")
    if name == "http":
        from tradebot.signals.remote import HttpStrategy

        return HttpStrategy(url, stops=stops_cls(**stop_kwargs), reactor=reactor, **kwargs)
    return cls(stops=stops_cls(**stop_kwargs), **kwargs)


def _parse_params(rest: str, text: str) -> Dict[str, str]:
    params = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise ValueError(f"malformed parameter {item!r} in {text!r}: use key=value")
        if key.strip() in params:
            raise ValueError(f"{key.strip()!r} is given twice in {text!r}")
        params[key.strip()] = value.strip()
    return params


def _convert(kind, key: str, value: str, text: str):
    meaning = "a whole number" if kind is int else "a finite number"
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"{key} must be {meaning} in {text!r}")
    if not math.isfinite(number):
        raise ValueError(f"{key} must be {meaning} in {text!r}")
    return number

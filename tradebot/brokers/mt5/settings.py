"""
The settings an ``mt5://`` or ``mt5linux://host:port`` URL gives, checked, and
the identity of the terminal it names however the URL is written.
"""

import re

from tradebot.broker import BrokerURL

#: Where the password comes from: never the URL, never a log line.
PASSWORD_ENV = "TRADEBOT_MT5_PASSWORD"


DEFAULT_MAGIC = 234000


def _number(params: dict, key: str, kind, default, meaning: str):
    if key not in params:
        return default
    try:
        value = kind(params[key])
    except ValueError:
        raise ValueError(f"mt5 broker: {key} must be {meaning}, not {params[key]!r}")
    if value < 0:
        raise ValueError(f"mt5 broker: {key} must be {meaning}, not {params[key]!r}")
    return value


KNOWN_PARAMS = {
    "path", "login", "server", "deviation", "magic", "timeout", "call_timeout", "heartbeat", "python", "name",
}


#: What a ``name=`` may hold: it shows in logs and metric labels.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def settings_from_url(url: BrokerURL) -> dict:
    """The settings an ``mt5://`` or ``mt5linux://host:port`` URL gives,
    checked; ValueError names what is wrong.

    Parameters: ``path`` (terminal64.exe), ``login``, ``server``,
    ``deviation`` (points, default 20), ``magic`` (default 234000),
    ``timeout`` (initialize/login, seconds), ``call_timeout`` (seconds before a
    silent call counts as hung, default 75), ``heartbeat`` (seconds), ``python``
    (the worker's interpreter, ``mt5://`` only), ``name`` (what logs and
    metrics call the terminal: letters, digits, ``_.-``, up to 40). A ``password`` parameter is
    refused: it is stored with the account, encrypted, or comes from
    ``$TRADEBOT_MT5_PASSWORD``."""
    params = url.params
    if "password" in params:
        raise ValueError(
            "mt5 broker: never put the password in the URL; store it with "
            f"`tradebot account set NAME --broker-password-stdin`, or set ${PASSWORD_ENV}"
        )
    unknown = set(params) - KNOWN_PARAMS
    if unknown:
        raise ValueError(f"mt5 broker: unknown parameter(s) {', '.join(sorted(unknown))}")
    host, port = None, None
    if url.scheme == "mt5linux":
        host, _, port_text = (url.netloc or "127.0.0.1:18812").partition(":")
        if port_text and not port_text.isdigit():
            raise ValueError(f"mt5linux broker: bad port {port_text!r}")
        host, port = host or "127.0.0.1", int(port_text or 18812)
    elif url.netloc:
        raise ValueError("mt5 broker: the terminal is named by ?path=, not by a host")
    name = params.get("name")
    if name is not None and not _NAME.fullmatch(name):
        raise ValueError(f"mt5 broker: name must be 1 to 40 letters, digits, '_', '.' or '-', not {name!r}")
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {
        "name": name,
        "url": f"{url.scheme}://{url.netloc}" + (f"?{query}" if query else ""),
        "scheme": url.scheme,
        "host": host,
        "port": port,
        "python": params.get("python"),
        "call_timeout": _number(params, "call_timeout", float, 75.0, "a number of seconds") or 75.0,
        "path": params.get("path"),
        "login": _number(params, "login", int, None, "an account number"),
        "server": params.get("server"),
        "deviation": _number(params, "deviation", int, 20, "a number of points"),
        "magic": _number(params, "magic", int, DEFAULT_MAGIC, "a whole number"),
        "init_timeout_ms": int(_number(params, "timeout", float, 60.0, "a number of seconds") * 1000),
        "heartbeat": _number(params, "heartbeat", float, 5.0, "a number of seconds") or 5.0,
    }


def terminal_identity(settings: dict) -> str:
    """What terminal the URL `settings` (`settings_from_url`) name, however
    the URL is written: its bridge's address, or its path."""
    if settings["scheme"] == "mt5linux":
        return f"mt5linux://{settings['host']}:{settings['port']}"
    return "mt5://" + (settings["path"] or "").replace("/", "\\").lower()

"""
The admin command's argument checks: each refusal is one readable line
(`CommandError`), raised before the database is opened, so nothing is
written.
"""

import argparse
import re
import sys
from decimal import Decimal, InvalidOperation
from typing import Iterable, Optional, Tuple

from tradebot.store import credentials

PROG = "tradebot"


DEMO_SYMBOLS = "XAUUSD,EURUSD,GBPUSD,USDJPY,BTCUSD"


_SYMBOL = re.compile(r"[A-Z0-9][A-Za-z0-9._#]{0,31}")  # broker suffixes: EURUSD.r, XAUUSDm


_NAME = re.compile(r"\S+")


class CommandError(Exception):
    """A refused command; its message is the one line printed after
    ``tradebot: error:``."""


class _UsageError(Exception):
    """Raised by the parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises `_UsageError` instead of exiting, so that
    every refusal is one line and `main` returns the exit code."""

    def error(self, message):
        where = self.prog[len(PROG):].strip()
        raise _UsageError(f"{where}: {message}" if where else message)


def parse_symbols(text: str) -> Tuple[str, ...]:
    """The symbols of a comma-separated list such as ``"XAUUSD, EURUSD"``, in
    order, spaces removed. Raises `CommandError` for an empty list, an empty
    item, a repeated name, or a name that does not start with an upper-case
    letter or digit and go on in ``[A-Za-z0-9._#]`` (broker suffixes such as
    ``EURUSD.r`` are names)."""
    items = [item.strip() for item in text.split(",")]
    if items == [""]:
        raise CommandError("--symbols: the list is empty")
    if "" in items:
        raise CommandError(f"--symbols: empty item in {text.strip()!r}")
    for item in items:
        if not _SYMBOL.fullmatch(item):
            raise CommandError(
                f"--symbols: {item!r} is not a symbol name "
                "(an upper-case letter or digit, then letters, digits, '.', '_', '#')"
            )
    seen = set()
    for item in items:
        if item in seen:
            raise CommandError(f"--symbols: {item} is listed twice")
        seen.add(item)
    return tuple(items)


def check_account_broker(url: str) -> str:
    """An account's own broker URL, checked: an MT5 terminal (the paper
    market is the server's, shared by every account on it). Raises
    `CommandError`."""
    from tradebot.broker import BrokerURL
    from tradebot.brokers.registry import check_url

    try:
        check_url(url)
    except ValueError as e:
        raise CommandError(f"--broker-url: {e}")
    if BrokerURL.parse(url).scheme not in ("mt5", "mt5linux"):
        raise CommandError(
            "--broker-url: an account's own broker is an MT5 terminal (mt5:// or mt5linux://); "
            "paper accounts use the server's --broker"
        )
    return url


def keyring(option: str) -> credentials.Keyring:
    """The keys of ``$TRADEBOT_SECRET_KEY``; raises `CommandError`, naming
    `option`, when there is no usable key."""
    try:
        return credentials.Keyring.from_environment()
    except credentials.MissingKey as e:
        raise CommandError(f"{option}: {e} (the server needs the same key)")
    except credentials.CredentialsError as e:
        raise CommandError(f"{option}: {e}")


def read_password(stdin=None) -> str:
    """The broker password on `stdin` (default: the process's): its first
    line, without the line end; asked for without echo on a terminal.
    Raises `CommandError` when there is none."""
    stdin = sys.stdin if stdin is None else stdin
    if stdin is None:
        raise CommandError("--broker-password-stdin: no standard input")
    if stdin.isatty():
        import getpass

        password = getpass.getpass("broker password: ")
    else:
        password = stdin.readline()
    password = password.rstrip("\r\n")
    if not password:
        raise CommandError("--broker-password-stdin: no password on standard input")
    return password


def check_password_broker(url: Optional[str]) -> None:
    """Raise `CommandError` unless `url`, an account's own broker URL, is one
    a stored password is used with: an MT5 terminal URL naming ``login=``."""
    from tradebot.broker import BrokerURL

    if url is None:
        raise CommandError(
            "--broker-password-stdin: a broker password is for an account's own terminal; give --broker-url too"
        )
    if "login" not in BrokerURL.parse(url).params:
        raise CommandError(
            "--broker-password-stdin: the broker URL names no login=; the password is only used to log in to it"
        )


def encrypted_password() -> str:
    """The broker password read from standard input, encrypted; the key is
    checked before the password is read. Raises `CommandError`."""
    keys = keyring("--broker-password-stdin")
    return keys.encrypt(read_password())


def check_known_symbols(symbols: Iterable[str], broker_url: str) -> None:
    """Raise `CommandError` unless the broker at `broker_url` offers every
    symbol; symbols are not checked when the broker cannot tell without
    connecting to a server."""
    from tradebot.brokers.registry import backend_from_url

    try:
        known = backend_from_url(broker_url, store=None, reactor=None).known_symbols()
    except ValueError as e:
        raise CommandError(f"--broker: {e}")
    if known is None:
        return
    unknown = [s for s in symbols if s not in known]
    if unknown:
        raise CommandError(
            f"--symbols: unknown symbol {', '.join(unknown)} (the broker offers "
            f"{', '.join(sorted(known))})"
        )


def parse_balance(text: str, option: str = "--balance") -> Decimal:
    """`text` as a positive, finite Decimal; raises `CommandError`."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise CommandError(f"{option}: {text!r} is not a number")
    if not value.is_finite() or value <= 0:
        raise CommandError(f"{option}: {text!r} is not a positive amount")
    return value


def parse_positive_int(text: str, option: str) -> int:
    """`text` as an integer of at least 1; raises `CommandError` naming
    `option`."""
    try:
        value = int(text.strip())
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not a whole number")
    if value < 1:
        raise CommandError(f"{option}: must be at least 1, not {value}")
    return value


def check_plan(name: str) -> str:
    """`name` if it names a plan (shipped, or a plan file); raises
    `CommandError` otherwise."""
    from tradebot.plans.files import load_plan

    try:
        load_plan(name)
    except (ValueError, OSError) as e:
        raise CommandError(f"--plan: {e}")
    return name


def check_name(name: str) -> str:
    """`name` if it is a usable account name (no spaces, not empty); raises
    `CommandError` otherwise."""
    if not _NAME.fullmatch(name):
        raise CommandError(f"{name!r} is not an account name (it must be one word)")
    return name


def parse_port(text: str) -> int:
    """`text` as a TCP port number; raises `CommandError`."""
    try:
        port = int(text)
    except ValueError:
        raise CommandError(f"--port: {text!r} is not a port number")
    if not 0 < port < 65536:
        raise CommandError(f"--port: {port} is not a port number")
    return port

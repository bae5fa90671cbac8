"""
The admin command, ``tradebot``: manage accounts and their tokens, list trades,
set up a demo account and watch a websocket.

    tradebot [--db URL] [--broker URL] COMMAND ...

A new database is created by the first command; one with an older schema is
refused until ``tradebot db upgrade``.

Every command checks its arguments before it opens the database: a refused
command prints one ``tradebot: error: ...`` line on stderr, exits with 2 and
writes nothing. A token is printed only by ``account add``, ``account
rotate-token``, ``demo`` and ``admin-token``, alone on the last line (``demo``
also prints it inside the client URL), and never logged; so is a webhook
secret, by ``account set --webhook``.

A broker password is read from standard input (``--broker-password-stdin``),
never from the command line, and stored only encrypted under the key in
``$TRADEBOT_SECRET_KEY`` (``tradebot secret-key`` makes one).
"""

import argparse
import json
import os
import re
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from tradebot.backtest import command as backtest_command
from tradebot.store import credentials, migrations
from tradebot.store.db import DEFAULT_DB_URL, StoreError, SyncStore
from tradebot.store.faults import DatabaseFault
from tradebot.store.migrations import SchemaError
from tradebot.store.tokens import hash_token, new_token
from tradebot.trading import alerts

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


# -- checking arguments ---------------------------------------------------------


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
    from tradebot.plans.plan import load_plan

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


# -- formatting -------------------------------------------------------------------


def plain(value) -> str:
    """`value` as table text: a Decimal in plain notation (never with an
    exponent), None as ``-``, a bool as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text or "0"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A text table: a header line, a rule, then one line per row, columns
    padded to their widest cell."""
    cells = [list(headers)] + [[plain(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


ACCOUNT_HEADERS = (
    "name", "symbols", "plan", "phase", "step", "balance", "max open", "always-on", "revoked",
)

TRADE_HEADERS = (
    "id", "account", "symbol", "side", "status", "lot", "open price", "SL", "TP",
    "close price", "profit", "result", "phase/step",
)


def account_row(account) -> list:
    """The cells of one account in `account list`."""
    return [
        account.name,
        ",".join(account.symbols),
        account.plan,
        account.phase,
        account.step,
        _cents(account.balance),
        account.max_open_trades,
        account.always_on,
        account.revoked,
    ]


def _cents(value: Optional[Decimal]) -> Optional[str]:
    return None if value is None else format(value.quantize(Decimal("0.01")), "f")


def _prices(*values: Optional[Decimal]) -> List[Optional[str]]:
    """Prices of one trade with the same number of decimals (the store keeps
    1.08620 as 1.0862; its stop at 1.08639 shows the symbol has five)."""
    present = [v for v in values if v is not None]
    places = max((max(0, -v.as_tuple().exponent) for v in present), default=0)
    unit = Decimal(1).scaleb(-places)
    return [None if v is None else format(v.quantize(unit), "f") for v in values]


def trade_row(name: str, trade) -> list:
    """The cells of one trade in `trades` and `account show`: prices with
    the trade's decimals, the profit in cents."""
    return [
        trade.id,
        name,
        trade.symbol,
        trade.side,
        trade.status,
        trade.lot_size,
        *_prices(trade.open_price, trade.stop_loss, trade.take_profit, trade.close_price),
        _cents(trade.profit),
        trade.result,
        f"{trade.phase}/{trade.step}",
    ]


def _print_token(intro: str, token: str) -> None:
    print(intro)
    print(token)


# -- commands ---------------------------------------------------------------------


def cmd_account_add(args, store) -> int:
    """Create the account and print its new token alone on the last line."""
    token = new_token()
    store.add_account(
        name=args.name,
        symbols=args.symbols,
        balance=args.balance,
        plan=args.plan,
        max_open_trades=args.max_open_trades,
        always_on=args.always_on,
        token_hash=hash_token(token),
        broker=args.account_broker,
        broker_password_encrypted=args.broker_password_encrypted,
    )
    if args.broker_password_encrypted is not None:
        print(f"account {args.name}: broker password stored, encrypted")
    _print_token(
        f"account {args.name} created; its token (shown once, only its hash is stored):", token
    )
    return 0


def cmd_account_list(args, store) -> int:
    """Print every account as a table."""
    accounts = store.list_accounts()
    if not accounts:
        print("no accounts")
        return 0
    print(table(ACCOUNT_HEADERS, [account_row(a) for a in accounts]))
    return 0


def cmd_account_show(args, store) -> int:
    """Print one account's settings, progress, balance and live trades."""
    account = _existing(store, args.name)
    fields = [
        ("name", account.name),
        ("symbols", ",".join(account.symbols)),
        ("plan", account.plan),
        ("phase/step", f"{account.phase}/{account.step}"),
        ("balance", _cents(account.balance)),
        ("max open trades", account.max_open_trades),
        ("always on", plain(account.always_on)),
        ("broker", account.broker or "the server's (--broker)"),
        ("broker name", _broker_name(store, account.broker)),
        ("broker password", "stored, encrypted" if account.has_broker_password else "none stored"),
        ("webhook", "subscribed" if store.run(alerts.thd_has_webhook, account.id) else "none"),
        ("revoked", plain(account.revoked)),
    ]
    for label, value in fields:
        print(f"{label + ':':17}{value}")
    _show_plan(store, account)
    live = store.trades(account_name=account.name, live_only=True)
    if live:
        print("live trades:")
        print(table(TRADE_HEADERS, [trade_row(n, t) for n, t in live]))
    else:
        print("live trades: none")
    return 0


def _broker_name(store, url) -> str:
    """What the server's logs, /health and /metrics call the account's broker."""
    from tradebot.broker import BrokerURL
    from tradebot.store import serverkeys

    if url is None:
        return "the server's broker (paper, or its own name)"
    parsed = BrokerURL.parse(url)
    if parsed.scheme not in ("mt5", "mt5linux"):
        return parsed.scheme
    from tradebot.brokers.mt5.backend import settings_from_url, terminal_identity

    try:
        settings = settings_from_url(parsed)
    except ValueError as e:
        return f"(its URL is refused: {e})"
    return settings["name"] or serverkeys.broker_name(terminal_identity(settings), serverkeys.broker_name_key(store))


PLAN_EVENT_HEADERS = ("time (UTC)", "event", "phase", "step", "balance", "equity", "detail")


def _show_plan(store, account) -> None:
    """Print the account's plan state: status, the day and its starting
    balance, the headroom left under each limit at the stored balance, the
    target, and the history of plan events."""
    from tradebot.plans.engine import PlanEngine
    from tradebot.plans.plan import PlanError, load_plan
    from tradebot.store.planstore import thd_pending_plan_changes, thd_plan_events, thd_plan_state

    for _, changes in store.run(thd_pending_plan_changes, account.id):
        print(f"{'plan change:':17}queued, not applied yet: {json.dumps(changes)}")
    state = store.run(thd_plan_state, account.id)
    if state is None:
        print(f"{'plan state:':17}none yet (it starts at the account's first signal check)")
        return
    try:
        engine = PlanEngine(load_plan(account.plan))
    except PlanError as e:
        print(f"{'plan state:':17}its plan does not load: {e}")
        return
    plan = engine.plan
    phase = plan.phase_at(state.phase)
    room = engine.headroom(state, account.balance, account.balance)
    target = engine.target(state)

    buffer = engine.buffer(state)
    kept = f"; {_cents(buffer)} kept back" if buffer else ""

    def limit(left, floor):
        return "no limit" if left is None else f"{_cents(left)} (equity floor {_cents(floor)}{kept})"

    fields = [
        ("plan status", f"{state.status}, phase {state.phase} ({phase.name}) step {state.step}"),
        ("trading day", f"{state.day} (starts {plan.day_reset_hour:02d}:00 {plan.time_zone})"),
        ("day start", f"{_cents(state.day_start_balance)} (equity {_cents(state.day_start_equity)})"),
        ("initial capital", _cents(state.initial_capital)),
        ("phase start", f"{_cents(state.phase_start_balance)} (the broker balance standing for the initial capital)"),
        ("daily headroom", limit(room.daily, engine.daily_floor(state))),
        ("total headroom", limit(room.overall, engine.overall_floor(state))),
        ("target", "none" if target is None else _cents(target)),
        ("trading days", f"{state.trading_days} (at least {phase.min_trading_days} before the target counts)"),
    ]
    for label, value in fields:
        print(f"{label + ':':17}{value}")
    events = store.run(thd_plan_events, account.id)
    if not events:
        print("plan events: none")
        return
    print("plan events:")
    rows = [
        [time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at)), e.kind, e.phase, e.step,
         _cents(e.balance), _cents(e.equity), e.detail]
        for e in events
    ]
    print(table(PLAN_EVENT_HEADERS, rows))


def cmd_account_revoke(args, store) -> int:
    """Revoke the account's token: it no longer connects until rotate-token."""
    store.set_token_hash(args.name, None)
    print(f"account {args.name}: token revoked")
    return 0


def cmd_account_rotate_token(args, store) -> int:
    """Give the account a new token, print it alone on the last line; the old
    token stops working."""
    _existing(store, args.name)
    token = new_token()
    store.set_token_hash(args.name, hash_token(token))
    _print_token(
        f"account {args.name}: new token (shown once, only its hash is stored):", token
    )
    return 0


def cmd_account_set(args, store) -> int:
    """Change the settings given on the command line."""
    if args.changes.get("broker_password_encrypted") is not None:
        check_password_broker(args.changes.get("broker", _existing(store, args.name).broker))
    account = store.update_account(args.name, args.changes)
    if args.webhook is False:
        had = store.run(alerts.thd_clear_webhook, account.name)
        print(f"account {account.name}: webhook removed" if had else f"account {account.name}: had no webhook")
    print(f"account {account.name} updated")
    if args.webhook:
        secret = new_token()
        store.run(alerts.thd_set_webhook, account.name, hash_token(secret), time.time())
        _print_token(
            f"account {account.name}: webhook secret (shown once, only its hash is stored; "
            "alerts go to POST /webhook/SECRET, any former secret no longer works):",
            secret,
        )
    return 0


def cmd_account_plan(args, store) -> int:
    """Queue the operator's change to the account's plan state and say when
    it takes effect."""
    from tradebot.store.planstore import thd_queue_plan_change

    account = _existing(store, args.name)
    store.run(thd_queue_plan_change, account.id, args.changes, time.time())
    shown = ", ".join(f"{k.replace('_', ' ')} {v}" if v is not True else k for k, v in args.changes.items())
    print(f"account {account.name}: queued: {shown}")
    print("the server applies it at the account's next signal check, or when its session starts")
    return 0


def cmd_account_reencrypt(args, store) -> int:
    """Encrypt every stored broker password again under the first key of
    ``$TRADEBOT_SECRET_KEY`` (after a new key was put first); all or none."""
    keys = args.keyring

    def again(name, token):
        try:
            return keys.rotate(token)
        except credentials.CredentialsError as e:
            raise CommandError(f"account reencrypt: account {name}: {e}; nothing was changed")

    names = store.reencrypt_broker_passwords(again)
    print(
        f"{len(names)} stored broker password(s) encrypted again under the first key "
        f"of ${credentials.KEY_ENV}" + (f": {', '.join(names)}" if names else "")
    )
    return 0


def cmd_admin_token(args, store) -> int:
    """Make a new admin token, keep its hash (the old token stops working)
    and print it, alone on the last line."""
    from tradebot.store import serverkeys

    token = new_token()
    store.run(serverkeys.thd_set_admin_token, token, time.time())
    print("a new admin token (shown once, only its hash is stored; the previous one no longer works).")
    print("Send it as 'Authorization: Bearer TOKEN' to /metrics and /health on the server's port:")
    print(token)
    return 0


def cmd_secret_key(args) -> int:
    """Print a new random key for ``$TRADEBOT_SECRET_KEY``, alone on its line."""
    print(credentials.new_key())
    return 0


def cmd_trades(args, store) -> int:
    """Print the recorded trades as a table, oldest first."""
    rows = store.trades(account_name=args.name, live_only=args.open)
    if not rows:
        print("no live trades" if args.open else "no trades")
        return 0
    print(table(TRADE_HEADERS, [trade_row(n, t) for n, t in rows]))
    return 0


def cmd_demo(args, store) -> int:
    """Create the demo account (or give the existing one a new token) and
    print its token, its client URL and how to watch it."""
    token = new_token()
    if store.account_by_name(args.name) is None:
        store.add_account(
            name=args.name,
            symbols=args.symbols,
            balance=Decimal("10000"),
            plan="default",
            max_open_trades=1,
            always_on=False,
            token_hash=hash_token(token),
        )
        intro = f"demo account {args.name} created"
    else:
        store.set_token_hash(args.name, hash_token(token))
        intro = f"demo account {args.name} exists; it has a new token (the old one cannot be shown again)"
    url = f"ws://{args.host}:{args.port}/ws/check/premium/?{token}"
    print(intro)
    print(f"client URL: {url}")
    print(f"watch it with: {PROG} watch   (paste the URL when asked, or set ${WATCH_URL_ENV};")
    print("  given as an argument, the token would show in `ps` and in your shell's history)")
    print("its token (shown once, only its hash is stored):")
    print(token)
    return 0


def _existing(store, name):
    from tradebot.store.db import UnknownAccount

    account = store.account_by_name(name)
    if account is None:
        raise UnknownAccount(f"no account named {name!r}")
    return account


# -- watch --------------------------------------------------------------------------


def _where(url: str) -> str:
    """The host:port of a websocket URL, for error messages (never the token)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return f"{parts.hostname}:{port}"


#: Where `watch` finds its URL when none is given.
WATCH_URL_ENV = "TRADEBOT_WATCH_URL"


def _url_from_outside() -> str:
    """The URL `watch` was not given on its command line: from the
    environment, else one line of standard input (asked for, unechoed, on a
    terminal), so the token never shows in argv."""
    url = os.environ.get(WATCH_URL_ENV, "").strip()
    if url:
        return url
    if sys.stdin.isatty():
        import getpass

        url = getpass.getpass("client URL (ws://...?TOKEN): ")
    else:
        url = sys.stdin.readline()
    if not url.strip():
        raise CommandError(f"watch: no URL (give it on standard input or in ${WATCH_URL_ENV})")
    return url.strip()


def check_ws_url(url: str) -> str:
    """`url` if it is a ws:// or wss:// URL with a host; raises `CommandError`
    (without repeating the URL, which may carry a token)."""
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        raise CommandError("watch: malformed URL")
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise CommandError("watch: the URL must start with ws:// or wss:// and name a host")
    return url


async def watch(reactor, url: str, count: Optional[int], out=None) -> int:
    """Connect to `url`, send ``{"msg": "ping"}`` and print every message as
    one JSON line until `count` messages (or forever). Returns 0 when done;
    1 after printing one error line when the connection or handshake fails
    or the server closes the connection."""
    from autobahn.twisted.websocket import (
        WebSocketClientFactory,
        WebSocketClientProtocol,
        connectWS,
    )
    from twisted.internet import defer

    out = out or sys.stdout
    done = defer.Deferred()
    state = {"received": 0, "opened": False, "stopping": False}

    def finish(error=None):
        if not done.called:
            done.callback(error)

    class Watcher(WebSocketClientProtocol):
        def onOpen(self):
            state["opened"] = True
            self.sendMessage(json.dumps({"msg": "ping"}).encode("utf-8"))

        def onMessage(self, payload, isBinary):
            if state["stopping"]:
                return
            try:
                message = json.loads(payload)
            except ValueError:
                message = payload.decode("utf-8", "replace") if isBinary is False else repr(payload)
            out.write(json.dumps(message) + "\n")
            out.flush()
            state["received"] += 1
            if count is not None and state["received"] >= count:
                state["stopping"] = True
                self.sendClose(1000)  # finish once the server answers (onClose)

        def onClose(self, wasClean, code, reason):
            if state["stopping"]:
                finish()
            elif not state["opened"]:
                finish(f"websocket handshake with {_where(url)} failed: {reason}")
            else:
                finish(f"connection to {_where(url)} closed ({code}{': ' + reason if reason else ''})")

    class Factory(WebSocketClientFactory):
        def clientConnectionFailed(self, connector, reason):
            finish(f"cannot connect to {_where(url)}: {reason.getErrorMessage()}")

        def clientConnectionLost(self, connector, reason):
            if not state["stopping"]:
                finish(f"connection to {_where(url)} lost: {reason.getErrorMessage()}")

    def on_shutdown():
        state["stopping"] = True  # Ctrl-C: not an error
        finish()

    trigger = reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    factory = Factory(url, reactor=reactor)
    factory.protocol = Watcher
    factory.noisy = False
    connectWS(factory, timeout=30)
    try:
        error = await done
    finally:
        reactor.removeSystemEventTrigger(trigger)
    if error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def _one_line(text) -> str:
    return " ".join(str(text).split())


def cmd_watch(args) -> int:
    """Run `watch` under its own reactor; the exit code it gives (0 when
    stopped with Ctrl-C)."""
    from twisted.internet.task import react

    outcome = {"code": 0}

    async def run(reactor):
        outcome["code"] = await watch(reactor, args.url, args.count)

    try:
        react(run)
    except SystemExit as e:
        if e.code not in (0, None):
            return e.code if isinstance(e.code, int) else 1
    return outcome["code"]


# -- the parser -----------------------------------------------------------------------


_PASSWORD_HELP = (
    "read the password of the terminal's login= from standard input (one line; asked for on a "
    f"terminal) and store it encrypted under ${credentials.KEY_ENV}"
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser. Numbers, symbol lists and plans are kept as
    text here and checked by `check_args`, so every refusal is one line."""
    parser = _Parser(prog=PROG, description="Administer a tradebot server's accounts and trades.")
    parser.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get("TRADEBOT_DB") or DEFAULT_DB_URL,
        help="database URL (default: $TRADEBOT_DB, else %(default)s)",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        default=os.environ.get("TRADEBOT_BROKER") or "paper",
        help="broker URL, used to check symbol names (default: $TRADEBOT_BROKER, else paper)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    account = commands.add_parser("account", help="manage accounts and their tokens")
    acts = account.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    acts.required = True

    add = acts.add_parser("add", help="create an account and print its token")
    add.add_argument("name")
    add.add_argument("--symbols", required=True, metavar="LIST", help="comma-separated, e.g. XAUUSD,EURUSD")
    add.add_argument("--balance", default="10000", metavar="AMOUNT", help="starting balance (default: 10000)")
    add.add_argument("--plan", default="default", metavar="PLAN", help="plan name or .toml file (default: default)")
    add.add_argument("--max-open-trades", default="1", metavar="N", help="default: 1")
    add.add_argument("--always-on", action="store_true", help="trade while no client is connected")
    add.add_argument(
        "--broker-url",
        dest="account_broker",
        metavar="URL",
        help="the account's own MT5 terminal (mt5://?path=...&login=... or mt5linux://HOST:PORT); "
        "default: the server's --broker",
    )
    add.add_argument("--broker-password-stdin", action="store_true", help=_PASSWORD_HELP)

    acts.add_parser("list", help="list every account")
    for action, text in (
        ("show", "show an account and its live trades"),
        ("revoke", "revoke an account's token"),
        ("rotate-token", "give an account a new token and print it"),
    ):
        acts.add_parser(action, help=text).add_argument("name")

    set_ = acts.add_parser("set", help="change an account's settings")
    set_.add_argument("name")
    set_.add_argument("--symbols", metavar="LIST")
    set_.add_argument("--plan", metavar="PLAN")
    set_.add_argument("--max-open-trades", metavar="N")
    set_.add_argument("--always-on", dest="always_on", action="store_true", default=None)
    set_.add_argument("--no-always-on", dest="always_on", action="store_false")
    set_.add_argument(
        "--broker-url", dest="account_broker", metavar="URL", help="an MT5 terminal URL, or 'default'"
    )
    password = set_.add_mutually_exclusive_group()
    password.add_argument("--broker-password-stdin", action="store_true", help=_PASSWORD_HELP)
    password.add_argument(
        "--clear-broker-password", action="store_true", help="remove the stored broker password"
    )
    webhook = set_.add_mutually_exclusive_group()
    webhook.add_argument(
        "--webhook",
        dest="webhook",
        action="store_true",
        default=None,
        help="subscribe to a new webhook (POST /webhook/SECRET) and print its secret",
    )
    webhook.add_argument("--no-webhook", dest="webhook", action="store_false", help="remove the webhook")
    acts.add_parser(
        "reencrypt",
        help=f"encrypt every stored broker password again under the first key of ${credentials.KEY_ENV}",
    )
    plan = acts.add_parser(
        "plan",
        help="set where the account stands in its plan (phase, initial capital, reference balance, restart)",
        description="Queue a change to the account's plan state; its session applies it at its next signal "
        "check (or when it starts). A prop-firm challenge's money is counted from the firm's initial capital: "
        "--reference-balance is the broker balance that stands for it (the new account's balance, when the "
        "firm gives one for the next phase).",
    )
    plan.add_argument("name")
    plan.add_argument("--phase", metavar="N", help="move to phase N, step 1, its trading days from 0")
    plan.add_argument("--initial-capital", metavar="AMOUNT", help="the firm's account size its percentages are of")
    plan.add_argument("--reference-balance", metavar="AMOUNT", help="the broker balance standing for it")
    plan.add_argument("--restart", action="store_true", help="a failed (or completed) phase trades again")

    trades = commands.add_parser("trades", help="list recorded trades")
    trades.add_argument("name", nargs="?")
    trades.add_argument("--open", action="store_true", help="only pending and open trades")

    demo = commands.add_parser("demo", help="create the demo account and print its URL")
    demo.add_argument("--name", default="demo", help="default: demo")
    demo.add_argument("--host", default="127.0.0.1", help="the server's host in the URL")
    demo.add_argument("--port", default="8000", help="the server's port in the URL")
    demo.add_argument("--symbols", default=DEMO_SYMBOLS, metavar="LIST", help=f"default: {DEMO_SYMBOLS}")

    db = commands.add_parser("db", help="the database schema")
    db_acts = db.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    db_acts.required = True
    db_acts.add_parser("upgrade", help="bring the database to this version's schema (creates a new one)")
    db_acts.add_parser("current", help="print the database's schema revision")

    commands.add_parser(
        "secret-key", help=f"print a new key for ${credentials.KEY_ENV} (encrypts stored broker passwords)"
    )
    commands.add_parser(
        "admin-token",
        help="make a new admin token (replacing the old), for /health details and /metrics on the public port",
    )

    watch_ = commands.add_parser(
        "watch",
        help="print the messages of a websocket URL",
        description=f"Connect to a websocket URL and print its messages. Without URL (or with -), the URL "
        f"comes from ${WATCH_URL_ENV}, else from standard input (asked for on a terminal, not echoed): "
        "given as an argument, its token shows in `ps` and in the shell's history.",
    )
    watch_.add_argument("url", nargs="?", default="-", help=f"the client URL; - or none: ${WATCH_URL_ENV} or stdin")
    watch_.add_argument("--count", metavar="N", help="stop after this many messages")

    backtest_command.add_parser(commands)
    return parser


def check_args(args) -> None:
    """Check and convert the arguments in place; raises `CommandError` before
    anything touches the database."""
    if getattr(args, "name", None) is not None and args.command != "trades":
        check_name(args.name)
    if args.command == "account" and args.action == "add":
        args.symbols = parse_symbols(args.symbols)
        args.balance = parse_balance(args.balance)
        args.max_open_trades = parse_positive_int(args.max_open_trades, "--max-open-trades")
        check_plan(args.plan)
        if args.account_broker is not None:
            args.account_broker = check_account_broker(args.account_broker)
        check_known_symbols(args.symbols, args.account_broker or args.broker)
        args.broker_password_encrypted = None
        if args.broker_password_stdin:
            check_password_broker(args.account_broker)
            args.broker_password_encrypted = encrypted_password()
    elif args.command == "account" and args.action == "plan":
        changes = {}
        if args.phase is not None:
            changes["phase"] = parse_positive_int(args.phase, "--phase")
        if args.initial_capital is not None:
            changes["initial_capital"] = str(parse_balance(args.initial_capital, "--initial-capital"))
        if args.reference_balance is not None:
            changes["reference_balance"] = str(parse_balance(args.reference_balance, "--reference-balance"))
        if args.restart:
            changes["restart"] = True
        if not changes:
            raise CommandError("account plan: nothing to change (give --phase, --initial-capital, --reference-balance or --restart)")
        args.changes = changes
    elif args.command == "account" and args.action == "set":
        changes = {}
        if args.symbols is not None:
            changes["symbols"] = parse_symbols(args.symbols)
        if args.plan is not None:
            changes["plan"] = check_plan(args.plan)
        if args.max_open_trades is not None:
            changes["max_open_trades"] = parse_positive_int(
                args.max_open_trades, "--max-open-trades"
            )
        if args.always_on is not None:
            changes["always_on"] = args.always_on
        if args.account_broker is not None:
            changes["broker"] = (
                None if args.account_broker == "default" else check_account_broker(args.account_broker)
            )
        if args.clear_broker_password:
            changes["broker_password_encrypted"] = None
        if not changes and not args.broker_password_stdin and args.webhook is None:
            raise CommandError(
                "account set: nothing to change (give --symbols, --plan, --max-open-trades, "
                "--always-on, --no-always-on, --broker-url, --broker-password-stdin, --clear-broker-password, "
                "--webhook or --no-webhook)"
            )
        if "symbols" in changes:
            check_known_symbols(changes["symbols"], changes.get("broker") or args.broker)
        if args.broker_password_stdin:
            if "broker" in changes:
                check_password_broker(changes["broker"])
            changes["broker_password_encrypted"] = encrypted_password()
        args.changes = changes
    elif args.command == "account" and args.action == "reencrypt":
        args.keyring = keyring("account reencrypt")
    elif args.command == "demo":
        args.symbols = parse_symbols(args.symbols)
        args.port = parse_port(args.port)
        if not args.host.strip():
            raise CommandError("--host: empty")
        check_known_symbols(args.symbols, args.broker)
    elif args.command == "watch":
        if args.url == "-":
            args.url = _url_from_outside()
        check_ws_url(args.url)
        if args.count is not None:
            args.count = parse_positive_int(args.count, "--count")


def cmd_db_upgrade(args, store) -> int:
    """Run the migrations the database lacks; say from where to where."""
    before = store.create_schema()
    now = migrations.head()
    if before == now:
        print(f"database {store.shown_url}: schema {now}, already current")
    elif before is None:
        print(f"database {store.shown_url}: created, schema {now}")
    else:
        print(f"database {store.shown_url}: upgraded from schema {before} to {now}")
    return 0


def cmd_db_current(args, store) -> int:
    """Print the database's schema revision and whether it is current."""
    revision, now = store.revision(), migrations.head()
    if revision is None:
        print(f"database {store.shown_url}: empty (the server or any command creates it at {now})")
    elif revision == now:
        print(f"database {store.shown_url}: schema {revision} (current)")
    else:
        print(f"database {store.shown_url}: schema {revision}; this tradebot needs {now}: run `{PROG} db upgrade`")
    return 0


# -- backtest (tradebot.backtest) ---------------------------------------------------


def cmd_backtest(args) -> int:
    """Replay CSV bars through a strategy and a plan; write the report."""
    try:
        return backtest_command.run(args)
    except backtest_command.BacktestError as e:
        return _fail(f"backtest: {e}")


_COMMANDS = {
    ("db", "upgrade"): cmd_db_upgrade,
    ("db", "current"): cmd_db_current,
    ("account", "add"): cmd_account_add,
    ("account", "list"): cmd_account_list,
    ("account", "show"): cmd_account_show,
    ("account", "revoke"): cmd_account_revoke,
    ("account", "rotate-token"): cmd_account_rotate_token,
    ("account", "set"): cmd_account_set,
    ("account", "reencrypt"): cmd_account_reencrypt,
    ("account", "plan"): cmd_account_plan,
    ("trades", None): cmd_trades,
    ("demo", None): cmd_demo,
    ("admin-token", None): cmd_admin_token,
}


def _fail(message: str) -> int:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command in `argv` (default: ``sys.argv[1:]``) and return its exit
    code: 0 on success, 2 after one ``tradebot: error:`` line on stderr for a
    refused command (nothing written), 1 when ``watch`` cannot connect or the
    database fails.
    ``--help`` prints the help and returns 0."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        return _fail(str(e))
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    try:
        check_args(args)
    except CommandError as e:
        return _fail(str(e))
    if args.command == "watch":
        return cmd_watch(args)
    if args.command == "secret-key":
        return cmd_secret_key(args)
    if args.command == "backtest":
        return cmd_backtest(args)
    store = None
    try:
        store = SyncStore(args.db)
        if args.command != "db":
            store.prepare()
        return _COMMANDS[(args.command, getattr(args, "action", None))](args, store)
    except (StoreError, CommandError, SchemaError) as e:
        return _fail(str(e))
    except DatabaseFault as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except SQLAlchemyError as e:
        print(f"{PROG}: error: database: {_one_line(getattr(e, 'orig', None) or e)}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()

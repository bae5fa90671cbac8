"""
The admin command's parser (numbers, lists and plans kept as text, checked by
`check_args` so that every refusal is one line) and its checks.
"""

import argparse
import os

from tradebot.backtest import command as backtest_command
from tradebot.cli.checks import (
    DEMO_SYMBOLS,
    PROG,
    CommandError,
    _Parser,
    check_account_broker,
    check_known_symbols,
    check_name,
    check_password_broker,
    check_plan,
    encrypted_password,
    keyring,
    parse_balance,
    parse_port,
    parse_positive_int,
    parse_symbols,
)
from tradebot.cli.watch import WATCH_URL_ENV, _url_from_outside, check_ws_url
from tradebot.store import credentials
from tradebot.store.db import DEFAULT_DB_URL

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

"""
The admin command's account commands (add, list, show, set, plan, revoke,
rotate-token, reencrypt), the admin token and the secret key, the trades
list and the demo account.
"""

import time
from decimal import Decimal

from tradebot.cli.checks import PROG, CommandError, check_password_broker
from tradebot.cli.show import (
    ACCOUNT_HEADERS,
    TRADE_HEADERS,
    _broker_name,
    _cents,
    _print_token,
    _show_plan,
    account_row,
    plain,
    table,
    trade_row,
)
from tradebot.cli.watch import WATCH_URL_ENV
from tradebot.store import credentials
from tradebot.store.tokens import hash_token, new_token
from tradebot.trading import alerts


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

"""
`tradebot COMMAND ...`: the commands by name, run on a store opened after the
arguments were checked; the database commands (upgrade, current) and the
backtest.
"""

import sys
from typing import List, Optional

from sqlalchemy.exc import SQLAlchemyError

from tradebot.backtest import command as backtest_command
from tradebot.cli.accounts import (
    cmd_account_add,
    cmd_account_list,
    cmd_account_plan,
    cmd_account_reencrypt,
    cmd_account_revoke,
    cmd_account_rotate_token,
    cmd_account_set,
    cmd_account_show,
    cmd_admin_token,
    cmd_demo,
    cmd_secret_key,
    cmd_trades,
)
from tradebot.cli.checks import PROG, CommandError, _UsageError
from tradebot.cli.parser import build_parser, check_args
from tradebot.cli.watch import _one_line, cmd_watch
from tradebot.store import migrations
from tradebot.store.db import StoreError, SyncStore
from tradebot.store.faults import DatabaseFault
from tradebot.store.migrations import SchemaError


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

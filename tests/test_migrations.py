"""
Schema migrations: a new database is made by them, the schema they make is the
one the code queries, a database holding data from the first schema upgrades
without losing any, and an older database is refused (by the server and by the
admin command) with the command that upgrades it.
"""

from decimal import Decimal

import pytest
import pytest_twisted
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from twisted.internet import reactor

from tradebot.cli import main as admin
from tradebot.server.tap import Options, makeService
from tradebot.store import migrations
from tradebot.store.db import SyncStore, make_engine
from tradebot.store.schema import metadata
from tradebot.store.tokens import hash_token
from tradebot.trading import alerts


def first_schema_database(db_url):
    """A database as the first release left it: tables made directly (no
    migrations), holding an account, a closed trade, an undelivered event
    and paper broker state."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn), "0001")
        conn.execute(sa.text("DROP TABLE alembic_version"))  # tables made directly, as then
        conn.execute(sa.text(
            "INSERT INTO accounts (id, name, token_hash, symbols, plan, phase, step, balance, "
            "max_open_trades, always_on, created_at) VALUES "
            "(1, 'old', 'ab12', 'XAUUSD,EURUSD', 'default', 2, 3, '10123.45', 1, :f, 1.5)"
        ), {"f": False})
        conn.execute(sa.text(
            "INSERT INTO trades (id, account_id, symbol, side, status, comment, ticket, lot_size, "
            "stop_loss, take_profit, open_price, close_price, profit, result, close_reason, phase, step, "
            "phase_after, step_after, balance_after, created_at, opened_at, closed_at) VALUES "
            "(7, 1, 'XAUUSD', 'BUY', 'closed', 'tb-7', 1001, '0.20', '2325.20', '2340.20', '2330.20', "
            "'2340.20', '200.00', 'profit', 'tp', 1, 2, 2, 3, '10123.45', 2.0, 3.0, 4.0)"
        ))
        conn.execute(sa.text(
            "INSERT INTO events (id, account_id, trade_id, payload, created_at) "
            "VALUES (1, 1, 7, '{\"message\": \"Trade completed\"}', 4.0)"
        ))
        conn.execute(sa.text(
            "INSERT INTO broker_state (backend, key, value) VALUES ('paper', 'market', '{\"seed\": 7}')"
        ))
    engine.dispose()


def rows(db_url):
    """Every row of the first schema's tables: column -> value as text."""
    engine = make_engine(db_url)
    with engine.connect() as conn:
        found = {
            table: sorted(
                ({k: str(v) for k, v in row._mapping.items()} for row in conn.execute(sa.text(f"SELECT * FROM {table}"))),
                key=lambda r: sorted(r.items()),
            )
            for table in ("accounts", "trades", "events", "broker_state")
        }
    engine.dispose()
    return found


def kept(before, after) -> bool:
    """Whether every row of `before` is in `after` unchanged, in every column
    it had (later migrations may add columns)."""
    return all(
        len(after[table]) == len(rows_before)
        and all({k: a[k] for k in b} == b for b, a in zip(rows_before, after[table]))
        for table, rows_before in before.items()
    )


def added(before, after, table) -> list:
    """The columns `table`'s rows gained, with their values."""
    return [{k: v for k, v in a.items() if k not in b} for b, a in zip(before[table], after[table])]


def test_the_migrations_make_exactly_the_schema_the_code_queries(db_url):
    store = SyncStore(db_url)
    assert store.create_schema() is None  # it was empty
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert migrations.revision_of(conn) == migrations.head()
    store.close()
    assert differences == []


def test_a_database_from_the_first_schema_upgrades_and_keeps_every_row(db_url, capsys):
    first_schema_database(db_url)
    before = rows(db_url)
    assert admin(["--db", db_url, "db", "current"]) == 0
    assert "unversioned" in capsys.readouterr().out
    assert admin(["--db", db_url, "db", "upgrade"]) == 0
    assert f"to {migrations.head()}" in capsys.readouterr().out
    after = rows(db_url)
    # the accounts gained columns (NULL: no broker, no password, no plan change); nothing else changed
    assert kept(before, after)
    assert added(before, after, "accounts") == [
        {"broker": "None", "broker_password_encrypted": "None", "plan_changed_at": "None"}
    ]
    assert {k: v for k, v in after.items() if k != "accounts"} == {k: v for k, v in before.items() if k != "accounts"}
    store = SyncStore(db_url)
    account = store.account_by_name("old")
    [(_, trade)] = store.trades("old")
    store.close()
    assert (account.phase, account.step, account.balance, account.broker) == (2, 3, Decimal("10123.45"), None)
    assert (trade.profit, trade.close_reason, trade.balance_after) == (Decimal("200"), "tp", Decimal("10123.45"))
    assert admin(["--db", db_url, "db", "upgrade"]) == 0
    assert "already current" in capsys.readouterr().out


def test_a_database_at_0002_gains_the_encrypted_password_column_and_keeps_every_row(db_url, capsys):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn), "0002")
        conn.execute(sa.text(
            "INSERT INTO accounts (id, name, token_hash, symbols, plan, phase, step, balance, "
            "max_open_trades, always_on, created_at, broker) VALUES "
            "(1, 'mia', 'cd34', 'EURUSD', 'default', 1, 2, '5000', 1, :f, 1.5, 'mt5://?login=5')"
        ), {"f": False})
    engine.dispose()
    before = rows(db_url)
    assert admin(["--db", db_url, "db", "upgrade"]) == 0
    assert f"from schema 0002 to {migrations.head()}" in capsys.readouterr().out
    after = rows(db_url)
    assert kept(before, after)
    assert added(before, after, "accounts") == [{"broker_password_encrypted": "None", "plan_changed_at": "None"}]
    store = SyncStore(db_url)
    account = store.account_by_name("mia")
    store.close()
    assert account.broker == "mt5://?login=5" and not account.has_broker_password


def test_a_database_at_0003_gains_the_webhook_and_alert_tables_and_keeps_every_row(db_url, capsys):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn), "0003")
        conn.execute(sa.text(
            "INSERT INTO accounts (id, name, token_hash, symbols, plan, phase, step, balance, "
            "max_open_trades, always_on, created_at, broker_password_encrypted) VALUES "
            "(1, 'zoe', 'ef56', 'EURUSD,XAUUSD', 'default', 1, 1, '7000', 1, :t, 1.5, 'gAAAA')"
        ), {"t": True})
    engine.dispose()
    before = rows(db_url)
    assert admin(["--db", db_url, "db", "upgrade"]) == 0
    assert f"from schema 0003 to {migrations.head()}" in capsys.readouterr().out
    assert kept(before, rows(db_url))
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM webhooks")).scalar() == 0
        assert conn.execute(sa.text("SELECT COUNT(*) FROM alerts")).scalar() == 0
    engine.dispose()
    # the account can subscribe to a webhook now
    assert admin(["--db", db_url, "account", "set", "zoe", "--webhook"]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    store = SyncStore(db_url)
    [(account, _)] = store.run(alerts.thd_subscribers, hash_token(secret))
    store.close()
    assert account.name == "zoe" and account.balance == Decimal("7000")


def test_a_new_database_is_created_by_any_command(db_url, capsys):
    assert admin(["--db", db_url, "db", "current"]) == 0
    assert "empty" in capsys.readouterr().out
    assert admin(["--db", db_url, "account", "list"]) == 0
    capsys.readouterr()
    assert admin(["--db", db_url, "db", "current"]) == 0
    assert "(current)" in capsys.readouterr().out


def test_the_admin_command_refuses_an_older_database_and_names_the_upgrade(db_url, capsys):
    first_schema_database(db_url)
    before = rows(db_url)
    code = admin(["--db", db_url, "account", "add", "new", "--symbols", "XAUUSD"])
    err = capsys.readouterr().err
    assert code == 2 and "older schema" in err and "db upgrade" in err
    assert kept(before, rows(db_url))


@pytest_twisted.ensureDeferred
async def test_the_server_refuses_to_start_on_an_older_database(db_url, logged_errors):
    first_schema_database(db_url)
    config = Options()
    config.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "--db", db_url])
    service = makeService(config, _NoStop(reactor))
    service.startService()
    with pytest.raises(migrations.SchemaError, match="db upgrade"):
        await service.started
    assert logged_errors.take_errors("older schema") == 1
    assert service.port is None
    await service.stopService()


class _NoStop:
    """The reactor, except that a failed start does not stop it (the test
    runs on it)."""

    def __init__(self, real):
        self._real = real
        self.running = False

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_database_newer_than_the_code_is_refused(db_url, capsys):
    assert admin(["--db", db_url, "db", "upgrade"]) == 0
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    capsys.readouterr()
    assert admin(["--db", db_url, "account", "list"]) == 2
    assert "newer than this tradebot knows" in capsys.readouterr().err


def test_a_password_in_the_database_url_is_never_shown(capsys):
    store = SyncStore("postgresql+psycopg://user:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in store.shown_url and "***" in store.shown_url
    store.close()


def test_a_database_at_0004_gains_the_plan_tables_and_keeps_every_row(db_url, capsys):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn), "0004")
        conn.execute(sa.text(
            "INSERT INTO accounts (id, name, token_hash, symbols, plan, phase, step, balance, "
            "max_open_trades, always_on, created_at) VALUES "
            "(1, 'zoe', 'ef56', 'EURUSD', 'default', 2, 3, '7000', 1, :t, 1.5)"
        ), {"t": False})
    engine.dispose()
    before = rows(db_url)
    assert admin(["--db", db_url, "db", "upgrade"]) == 0
    assert f"from schema 0004 to {migrations.head()}" in capsys.readouterr().out
    assert kept(before, rows(db_url))
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM plan_states")).scalar() == 0
        assert conn.execute(sa.text("SELECT COUNT(*) FROM plan_events")).scalar() == 0
    engine.dispose()

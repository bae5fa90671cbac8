"""
The admin command, `tradebot.cli.main`, against a real database: each test
that touches one runs on a SQLite file and on a PostgreSQL database (see
`conftest.db_url`).

Each test runs the command as the owner would and checks what it printed, its
exit code and what the database holds afterwards. `watch` runs as a real
process (``python -m tradebot``, under its own reactor) against an unreachable
port and against a small in-test websocket server.
"""

import json
import os
import socket
import subprocess
import sys
from decimal import Decimal

import pytest
import pytest_twisted
import sqlalchemy as sa
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue

from tradebot import cli
from tradebot.store.db import SyncStore
from tradebot.store.records import CLOSED, OPEN, PENDING
from tradebot.store.tokens import hash_token

from . import pg


@pytest.fixture
def run(db_url, capsys):
    """run(*args) -> (exit code, stdout, stderr) of ``tradebot --db DB args``."""

    def run(*args):
        code = cli.main(["--db", db_url, "--broker", "paper", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def store(db_url):
    store = SyncStore(db_url)
    store.create_schema()
    yield store
    store.close()


def db_path(db_url):
    """The file of a SQLite URL."""
    assert db_url.startswith("sqlite:///"), db_url
    return db_url[len("sqlite:///"):]


def _tables(db_url):
    """Every table of the database and its rows, each table's rows sorted:
    {name: (column names, rows)}. Read by reflection, so it sees whatever
    tables there are (alembic's version table included), not just the store's."""
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {
                name: (
                    tuple(c.name for c in table.columns),
                    sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr),
                )
                for name, table in metadata.tables.items()
            }
    finally:
        engine.dispose()


def db_bytes(db_url):
    """Everything the database stores, as bytes, to search for a secret.
    SQLite: every byte of the file, WAL included. PostgreSQL: what pg_dump
    writes (schema and every row), or every table's rows as text when no
    working pg_dump is installed."""
    if db_url.startswith("sqlite"):
        data = b""
        for suffix in ("", "-wal"):
            path = db_path(db_url) + suffix
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data += f.read()
        return data
    return pg.dump(db_url) or repr(_tables(db_url)).encode()


def snapshot(db_url):
    """What the database holds: every table's columns and rows (sorted), so
    two snapshots are equal only if nothing was written in between."""
    return _tables(db_url)


def database_untouched(db_url):
    """Whether nothing was ever written to the fresh test database: on SQLite
    its file was never even created; on PostgreSQL (where `db_url` made the
    database) it still holds no table, view or sequence."""
    if db_url.startswith("sqlite"):
        return not os.path.exists(db_path(db_url))
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            relations = conn.execute(sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
            )).scalars().all()
    finally:
        engine.dispose()
    return relations == []


def token_of(out):
    """The token a command printed alone on its last line."""
    last = out.rstrip("\n").splitlines()[-1]
    assert last.strip() == last and " " not in last and len(last) >= 32
    return last


def assert_refused(code, out, err, *words):
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tradebot: error: ")
    for word in words:
        assert word in lines[0]


def add(run, name="alice", *extra):
    code, out, err = run("account", "add", name, "--symbols", "XAUUSD,EURUSD", *extra)
    assert code == 0, err
    return token_of(out)


# -- account add ----------------------------------------------------------------


def test_add_prints_token_and_stores_only_its_hash(run, db_url, store):
    code, out, err = run(
        "account", "add", "alice", "--symbols", " XAUUSD , EURUSD ",
        "--balance", "2500.50", "--plan", "fixed", "--max-open-trades", "3", "--always-on",
    )
    assert code == 0, err
    token = token_of(out)
    assert len(out.strip().splitlines()) == 2
    assert token not in err

    account = store.account_by_token_hash(hash_token(token))
    assert account is not None and account.name == "alice"
    assert account.symbols == ("XAUUSD", "EURUSD")
    assert account.balance == Decimal("2500.50")
    assert account.plan == "fixed"
    assert account.max_open_trades == 3
    assert account.always_on is True
    assert account.revoked is False
    assert token.encode() not in db_bytes(db_url)
    assert hash_token(token).encode() in db_bytes(db_url)


def test_add_defaults(run, store):
    add(run, "bob")
    account = store.account_by_name("bob")
    assert (account.balance, account.plan, account.max_open_trades, account.always_on) == (
        Decimal("10000"), "default", 1, False,
    )
    assert (account.phase, account.step) == (1, 1)


def test_each_add_gives_a_different_token(run):
    assert add(run, "a") != add(run, "b")


def test_duplicate_name_is_refused_and_changes_nothing(run, db_url):
    token = add(run, "alice")
    before = snapshot(db_url)
    code, out, err = run("account", "add", "alice", "--symbols", "GBPUSD")
    assert_refused(code, out, err, "alice")
    assert snapshot(db_url) == before
    store = SyncStore(db_url)
    try:
        assert store.account_by_token_hash(hash_token(token)).symbols == ("XAUUSD", "EURUSD")
    finally:
        store.close()


@pytest.mark.parametrize(
    "args, word",
    [
        (["--symbols", "XAUUSD,NOPE"], "NOPE"),
        (["--symbols", ""], "empty"),
        (["--symbols", " , "], "empty"),
        (["--symbols", "XAUUSD,,EURUSD"], "empty"),
        (["--symbols", "XAUUSD,"], "empty"),
        (["--symbols", "xauusd"], "xauusd"),
        (["--symbols", "XAU-USD"], "XAU-USD"),
        (["--symbols", "XAUUSD,XAUUSD"], "twice"),
        (["--symbols", "XAUUSD", "--balance", "0"], "--balance"),
        (["--symbols", "XAUUSD", "--balance", "-5"], "--balance"),
        (["--symbols", "XAUUSD", "--balance", "lots"], "--balance"),
        (["--symbols", "XAUUSD", "--balance", "NaN"], "--balance"),
        (["--symbols", "XAUUSD", "--balance", "Infinity"], "--balance"),
        (["--symbols", "XAUUSD", "--max-open-trades", "0"], "--max-open-trades"),
        (["--symbols", "XAUUSD", "--max-open-trades", "two"], "--max-open-trades"),
        (["--symbols", "XAUUSD", "--plan", "no-such-plan"], "no-such-plan"),
        ([], "--symbols"),
    ],
)
def test_bad_add_is_refused_and_writes_nothing(run, db_url, args, word):
    code, out, err = run("account", "add", "carol", *args)
    assert_refused(code, out, err, word)
    # Refused before the database was even opened.
    assert database_untouched(db_url)


def test_bad_add_next_to_existing_accounts_writes_nothing(run, db_url):
    add(run, "alice")
    before = snapshot(db_url)
    code, out, err = run("account", "add", "carol", "--symbols", "XAUUSD,BOGUS")
    assert_refused(code, out, err, "BOGUS")
    assert snapshot(db_url) == before


def test_unknown_broker_scheme_is_refused(db_url, capsys):
    code = cli.main(["--db", db_url, "--broker", "nosuch://", "account", "add", "a", "--symbols", "XAUUSD"])
    out, err = capsys.readouterr()
    assert_refused(code, out, err, "--broker")


def test_db_and_broker_come_from_the_environment(db_url, monkeypatch, capsys):
    monkeypatch.setenv("TRADEBOT_DB", db_url)
    monkeypatch.setenv("TRADEBOT_BROKER", "paper")
    assert cli.main(["account", "add", "envy", "--symbols", "XAUUSD"]) == 0
    capsys.readouterr()
    store = SyncStore(db_url)
    try:
        assert store.account_by_name("envy") is not None
    finally:
        store.close()


# -- list / show --------------------------------------------------------------------


def test_list_shows_every_account(run):
    add(run, "alice")
    add(run, "bob", "--plan", "fixed", "--always-on")
    run("account", "revoke", "bob")
    code, out, err = run("account", "list")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "symbols", "plan"]
    alice = next(l for l in lines if l.startswith("alice"))
    bob = next(l for l in lines if l.startswith("bob"))
    assert alice.split() == ["alice", "XAUUSD,EURUSD", "default", "1", "1", "10000.00", "1", "no", "no"]
    assert bob.split() == ["bob", "XAUUSD,EURUSD", "fixed", "1", "1", "10000.00", "1", "yes", "yes"]


def test_list_with_no_accounts(run):
    code, out, _ = run("account", "list")
    assert code == 0
    assert "no accounts" in out


def test_show_prints_settings_and_live_trades(run, store):
    add(run, "alice", "--balance", "1234.5")
    account = store.account_by_name("alice")
    live = store.record_intent(
        account.id, "XAUUSD", "BUY", Decimal("0.10"), Decimal("1900.5"), Decimal("1950.25"), 1, 1
    )
    code, out, err = run("account", "show", "alice")
    assert code == 0, err
    assert "alice" in out
    assert "XAUUSD,EURUSD" in out
    assert "1234.5" in out
    assert "1/1" in out
    assert "live trades:" in out
    trade_line = next(l for l in out.splitlines() if l.split()[:1] == [str(live.id)])
    assert "pending" in trade_line and "1950.25" in trade_line


def test_show_unknown_account(run):
    code, out, err = run("account", "show", "nobody")
    assert_refused(code, out, err, "nobody")


# -- revoke / rotate-token ------------------------------------------------------------


def test_revoke_makes_the_token_unknown(run, store):
    token = add(run, "alice")
    code, out, err = run("account", "revoke", "alice")
    assert code == 0, err
    assert token not in out
    assert store.account_by_token_hash(hash_token(token)) is None
    assert store.account_by_name("alice").revoked is True


def test_rotate_token_replaces_the_token(run, db_url, store):
    old = add(run, "alice")
    code, out, err = run("account", "rotate-token", "alice")
    assert code == 0, err
    new = token_of(out)
    assert new != old
    assert store.account_by_token_hash(hash_token(old)) is None
    assert store.account_by_token_hash(hash_token(new)).name == "alice"
    assert new.encode() not in db_bytes(db_url)


def test_rotate_token_restores_a_revoked_account(run, store):
    add(run, "alice")
    run("account", "revoke", "alice")
    code, out, _ = run("account", "rotate-token", "alice")
    assert code == 0
    assert store.account_by_token_hash(hash_token(token_of(out))).revoked is False


@pytest.mark.parametrize("action", ["revoke", "rotate-token"])
def test_token_commands_refuse_unknown_names(run, db_url, action):
    add(run, "alice")
    before = snapshot(db_url)
    code, out, err = run("account", action, "nobody")
    assert_refused(code, out, err, "nobody")
    assert snapshot(db_url) == before


# -- set ----------------------------------------------------------------------------------


def test_set_changes_the_given_settings(run, store):
    token = add(run, "alice")
    code, out, err = run(
        "account", "set", "alice", "--symbols", "GBPUSD, USDJPY", "--plan", "fixed",
        "--max-open-trades", "4", "--always-on",
    )
    assert code == 0, err
    account = store.account_by_name("alice")
    assert account.symbols == ("GBPUSD", "USDJPY")
    assert (account.plan, account.max_open_trades, account.always_on) == ("fixed", 4, True)
    # The token is untouched.
    assert store.account_by_token_hash(hash_token(token)).name == "alice"

    assert run("account", "set", "alice", "--no-always-on")[0] == 0
    account = store.account_by_name("alice")
    assert account.always_on is False
    assert account.symbols == ("GBPUSD", "USDJPY") and account.max_open_trades == 4


def test_webhook_secret_printed_once_stored_as_a_hash_and_removed(run, db_url, store):
    from tradebot.trading import alerts

    add(run, "alice")
    code, out, err = run("account", "set", "alice", "--webhook")
    assert code == 0, err
    lines = out.strip().splitlines()
    secret = lines[-1]
    assert "shown once" in lines[-2] and "/webhook/SECRET" in lines[-2]
    assert len(secret) >= 32
    # only its hash is in the database
    assert secret not in repr(snapshot(db_url))
    [(account, stored)] = store.run(alerts.thd_subscribers, hash_token(secret))
    assert account.name == "alice" and stored == hash_token(secret)
    assert "webhook:         subscribed" in run("account", "show", "alice")[1]
    # a new secret replaces the old one
    code, out, _ = run("account", "set", "alice", "--webhook")
    newer = out.strip().splitlines()[-1]
    assert newer != secret
    assert store.run(alerts.thd_subscribers, hash_token(secret)) == []
    assert len(store.run(alerts.thd_subscribers, hash_token(newer))) == 1
    # removed
    code, out, _ = run("account", "set", "alice", "--no-webhook")
    assert code == 0 and "webhook removed" in out and newer not in out
    assert store.run(alerts.thd_subscribers, hash_token(newer)) == []
    assert "webhook:         none" in run("account", "show", "alice")[1]
    code, out, _ = run("account", "set", "alice", "--no-webhook")
    assert code == 0 and "had no webhook" in out


def test_webhook_options_are_refused_together_or_for_an_unknown_account(run, db_url):
    add(run, "alice")
    before = snapshot(db_url)
    assert_refused(*run("account", "set", "alice", "--webhook", "--no-webhook"), "not allowed with")
    code, out, err = run("account", "set", "nobody", "--webhook")
    assert code == 2 and "no account named 'nobody'" in err and out == ""
    assert snapshot(db_url) == before


@pytest.mark.parametrize(
    "args, word",
    [
        ([], "nothing to change"),
        (["--symbols", "XAUUSD,NOPE"], "NOPE"),
        (["--symbols", "XAUUSD,,EURUSD"], "empty"),
        (["--plan", "no-such-plan"], "no-such-plan"),
        (["--max-open-trades", "0"], "--max-open-trades"),
    ],
)
def test_bad_set_is_refused_and_changes_nothing(run, db_url, args, word):
    add(run, "alice")
    before = snapshot(db_url)
    code, out, err = run("account", "set", "alice", *args)
    assert_refused(code, out, err, word)
    assert snapshot(db_url) == before


TERMINAL = r"mt5://?path=C:\MT5\terminal64.exe&login=5001&server=Broker-Demo"


def test_an_account_may_trade_through_its_own_terminal(run, store):
    assert run("account", "add", "mia", "--symbols", "XAUUSD,EURUSD.r", "--broker-url", TERMINAL)[0] == 0
    # the terminal's symbols are not known here: a broker suffix is accepted
    assert store.account_by_name("mia").broker == TERMINAL
    code, out, _ = run("account", "show", "mia")
    assert code == 0 and "broker:" in out and "login=5001" in out

    assert run("account", "set", "mia", "--broker-url", "mt5linux://127.0.0.1:18812")[0] == 0
    assert store.account_by_name("mia").broker == "mt5linux://127.0.0.1:18812"
    assert run("account", "set", "mia", "--broker-url", "default")[0] == 0
    assert store.account_by_name("mia").broker is None
    code, out, _ = run("account", "show", "mia")
    assert "the server's (--broker)" in out


@pytest.mark.parametrize(
    "url, word",
    [
        ("paper://?seed=3", "MT5 terminal"),
        ("mt5://?login=5&password=hunter2", "never put the password in the URL"),
        ("mt5://?colour=red", "unknown parameter"),
        ("mt5://?login=five", "login"),
        ("mt5linux://host:port", "bad port"),
        ("ftp://x", "unknown broker URL scheme"),
    ],
)
def test_a_bad_account_broker_is_refused_and_changes_nothing(run, db_url, url, word):
    add(run, "alice")
    before = snapshot(db_url)
    code, out, err = run("account", "set", "alice", "--broker-url", url)
    assert_refused(code, out, err, word)
    assert "hunter2" not in out + err
    assert snapshot(db_url) == before
    code, out, err = run("account", "add", "bob", "--symbols", "XAUUSD", "--broker-url", url)
    assert_refused(code, out, err, word)
    assert snapshot(db_url) == before


def test_set_refuses_an_unknown_name(run, db_url):
    add(run, "alice")
    before = snapshot(db_url)
    code, out, err = run("account", "set", "nobody", "--plan", "fixed")
    assert_refused(code, out, err, "nobody")
    assert snapshot(db_url) == before


# -- trades --------------------------------------------------------------------------------


@pytest.fixture
def some_trades(run, store):
    """alice: one closed trade (profit) and one open; bob: one pending."""
    add(run, "alice")
    add(run, "bob")
    alice = store.account_by_name("alice")
    bob = store.account_by_name("bob")
    closed = store.record_intent(
        alice.id, "XAUUSD", "BUY", Decimal("0.10"), Decimal("1900.00"), Decimal("1950.00"), 1, 1
    )
    store.mark_open(closed.id, 11, Decimal("1925.12"), Decimal("0.10"), Decimal("1900.00"),
                    Decimal("1950.00"), 1000.0)
    store.complete_trade(
        closed.id,
        close_price=Decimal("1950.00"),
        closed_at=2000.0,
        profit=Decimal("248.80"),
        result="profit",
        close_reason="tp",
        phase_after=1,
        step_after=2,
        balance_after=Decimal("10248.80"),
        payload={"message": "done"},
    )
    opened = store.record_intent(
        alice.id, "EURUSD", "SELL", Decimal("1E+0"), Decimal("1.10500"), Decimal("1.09000"), 1, 2
    )
    store.mark_open(opened.id, 12, Decimal("1.10000"), Decimal("1E+0"), Decimal("1.10500"),
                    Decimal("1.09000"), 3000.0)
    pending = store.record_intent(
        bob.id, "XAUUSD", "SELL", Decimal("0.01"), Decimal("1990"), Decimal("1900"), 1, 1
    )
    return {"closed": closed.id, "open": opened.id, "pending": pending.id}


def rows_by_id(out):
    return {int(l.split()[0]): l.split() for l in out.strip().splitlines()[2:]}


def test_trades_lists_every_trade(run, some_trades):
    code, out, err = run("trades")
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header[:5] == ["id", "account", "symbol", "side", "status"]
    rows = rows_by_id(out)
    assert set(rows) == set(some_trades.values())
    assert rows[some_trades["closed"]] == [
        str(some_trades["closed"]), "alice", "XAUUSD", "BUY", CLOSED, "0.1", "1925.12", "1900.00",
        "1950.00", "1950.00", "248.80", "profit", "1/1",
    ]
    # Plain decimals, never an exponent, prices of a trade to the same decimals,
    # money to cents; missing values as "-".
    assert rows[some_trades["open"]][:10] == [
        str(some_trades["open"]), "alice", "EURUSD", "SELL", OPEN, "1", "1.100", "1.105", "1.090", "-",
    ]
    assert rows[some_trades["pending"]][6] == "-"
    assert "E+" not in out


def test_trades_open_lists_only_live_trades(run, some_trades):
    code, out, _ = run("trades", "--open")
    assert code == 0
    rows = rows_by_id(out)
    assert set(rows) == {some_trades["open"], some_trades["pending"]}
    assert rows[some_trades["pending"]][4] == PENDING


def test_trades_of_one_account(run, some_trades):
    code, out, _ = run("trades", "alice")
    assert code == 0
    assert set(rows_by_id(out)) == {some_trades["closed"], some_trades["open"]}
    code, out, _ = run("trades", "bob", "--open")
    assert set(rows_by_id(out)) == {some_trades["pending"]}


def test_trades_of_an_unknown_account(run, some_trades):
    code, out, err = run("trades", "nobody")
    assert_refused(code, out, err, "nobody")


def test_trades_when_there_are_none(run):
    add(run, "alice")
    code, out, _ = run("trades", "alice")
    assert code == 0 and "no trades" in out


# -- demo ----------------------------------------------------------------------------------


def test_demo_creates_then_rotates(run, db_url, store):
    code, out, err = run("demo", "--port", "8123")
    assert code == 0, err
    first = token_of(out)
    lines = out.splitlines()
    url = f"ws://127.0.0.1:8123/ws/check/premium/?{first}"
    assert f"client URL: {url}" in lines
    assert "watch it with: tradebot watch   (paste the URL when asked, or set $TRADEBOT_WATCH_URL;" in lines
    assert not [line for line in lines if first in line and "watch" in line]  # no command line holds the token
    demo = store.account_by_token_hash(hash_token(first))
    assert demo.name == "demo"
    assert demo.symbols == ("XAUUSD", "EURUSD", "GBPUSD", "USDJPY", "BTCUSD")

    code, out, err = run("demo", "--host", "example.org", "--port", "9000")
    assert code == 0, err
    second = token_of(out)
    assert second != first
    assert f"client URL: ws://example.org:9000/ws/check/premium/?{second}" in out.splitlines()
    assert store.account_by_token_hash(hash_token(first)) is None
    assert store.account_by_token_hash(hash_token(second)).name == "demo"
    assert [a.name for a in store.list_accounts()] == ["demo"]
    assert first.encode() not in db_bytes(db_url) and second.encode() not in db_bytes(db_url)


def test_demo_with_another_name_and_symbols(run, store):
    code, out, _ = run("demo", "--name", "trial", "--symbols", "BTCUSD")
    assert code == 0
    assert store.account_by_token_hash(hash_token(token_of(out))).symbols == ("BTCUSD",)


def test_demo_refuses_unknown_symbols(run, db_url):
    code, out, err = run("demo", "--symbols", "XAUUSD,NOPE")
    assert_refused(code, out, err, "NOPE")
    assert database_untouched(db_url)


# -- usage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], ["account"], ["account", "frobnicate"], ["nonsense"], ["trades", "--bogus"]],
)
def test_usage_errors_return_2(run, args):
    code, out, err = run(*args)
    assert_refused(code, out, err)


def test_help_returns_0(run):
    code, out, _ = run("--help")
    assert code == 0
    assert "account" in out and "watch" in out


# -- watch ------------------------------------------------------------------------------------


def closed_port():
    """A local port that was just bound and closed, so nothing listens there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_watch_an_unreachable_server_fails_with_one_line(db_url):
    url = f"ws://127.0.0.1:{closed_port()}/ws/check/premium/?sekrit-token-value"
    result = subprocess.run(
        [sys.executable, "-m", "tradebot", "--db", db_url, "watch", url, "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tradebot: error: ")
    assert "sekrit-token-value" not in result.stderr


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/", "not a url", "ws://"])
def test_watch_refuses_a_url_that_is_not_a_websocket(run, url):
    code, out, err = run("watch", url)
    assert_refused(code, out, err)


def test_watch_refuses_a_bad_count(run):
    code, out, err = run("watch", "ws://127.0.0.1:1/", "--count", "0")
    assert_refused(code, out, err, "--count")


GOOD = "good-tok3n-xyz"
BAD = "bad-tok3n-xyz"


class FakeServer(WebSocketServerProtocol):
    """Accepts only the token GOOD; greets, then answers each message with
    two, each carrying what it received."""

    def onConnect(self, request):
        if request.path != "/ws/check/premium/":
            raise ConnectionDeny(404)
        if self.http_request_uri.split("?", 1)[-1] != GOOD:
            raise ConnectionDeny(403)

    def onOpen(self):
        self.sendMessage(json.dumps({"message": "hello"}).encode())

    def onMessage(self, payload, isBinary):
        received = json.loads(payload)
        self.factory.received.append(received)
        for n in (1, 2):
            self.sendMessage(json.dumps({"message": f"reply {n}", "data": received}).encode())


@pytest.fixture
def fake_server():
    factory = WebSocketServerFactory("ws://127.0.0.1")
    factory.protocol = FakeServer
    factory.received = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    factory.base = f"ws://127.0.0.1:{port.getHost().port}"
    yield factory
    port.stopListening()


def watch_process(*args):
    """Deferred[(stdout, stderr, exit code)] of ``python -m tradebot watch``,
    run without blocking the reactor the fake server runs on."""
    return getProcessOutputAndValue(
        sys.executable, ["-m", "tradebot", "watch", *args], env=dict(os.environ)
    )


@pytest.mark.parametrize("given", ["stdin", "environment"])
@pytest_twisted.ensureDeferred
async def test_watch_takes_its_url_from_stdin_or_the_environment_never_argv(fake_server, given):
    from twisted.internet.utils import getProcessOutputAndValue as run_process

    url = f"{fake_server.base}/ws/check/premium/?{GOOD}"
    env = dict(os.environ)
    env.pop("TRADEBOT_WATCH_URL", None)
    if given == "environment":
        env["TRADEBOT_WATCH_URL"] = url
        out, err, code = await run_process(sys.executable, ["-m", "tradebot", "watch", "--count", "1"], env=env)
    else:
        process = run_process_with_stdin(["-m", "tradebot", "watch", "-", "--count", "1"], env, url + "\n")
        out, err, code = await process
    assert code == 0, err
    assert json.loads(out.decode().splitlines()[0]) == {"message": "hello"}
    assert fake_server.received == [{"msg": "ping"}]


def run_process_with_stdin(args, env, text):
    """Deferred[(stdout, stderr, exit code)] of ``python ARGS`` fed `text` on stdin."""
    from twisted.internet import protocol

    done = defer.Deferred()

    class Collect(protocol.ProcessProtocol):
        out, err = b"", b""

        def connectionMade(self):
            self.transport.write(text.encode())
            self.transport.closeStdin()

        def outReceived(self, data):
            self.out += data

        def errReceived(self, data):
            self.err += data

        def processEnded(self, reason):
            done.callback((self.out, self.err, reason.value.exitCode))

    reactor.spawnProcess(Collect(), sys.executable, [sys.executable, *args], env=env)
    return done


def test_watch_without_any_url_says_where_it_is_taken_from(run, monkeypatch):
    import io

    monkeypatch.delenv("TRADEBOT_WATCH_URL", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run("watch")
    assert code == 2 and "no URL (give it on standard input or in $TRADEBOT_WATCH_URL)" in err


@pytest_twisted.ensureDeferred
async def test_watch_pings_and_prints_each_message_as_a_json_line(fake_server):
    out, err, code = await watch_process(f"{fake_server.base}/ws/check/premium/?{GOOD}", "--count", "3")
    assert code == 0, err
    assert fake_server.received == [{"msg": "ping"}]
    lines = out.decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"message": "hello"},
        {"message": "reply 1", "data": {"msg": "ping"}},
        {"message": "reply 2", "data": {"msg": "ping"}},
    ]
    assert err == b""


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("path, status", [(f"/ws/check/premium/?{BAD}", "403"), (f"/elsewhere/?{GOOD}", "404")])
async def test_watch_refused_handshake_is_one_line_and_exit_1(fake_server, path, status):
    out, err, code = await watch_process(fake_server.base + path)
    assert code == 1
    assert out == b""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tradebot: error: ") and status in lines[0]
    assert GOOD not in lines[0] and BAD not in lines[0]
    assert fake_server.received == []


class InterruptOnFirstLine(protocol.ProcessProtocol):
    """Sends SIGINT (Ctrl-C) once the process printed its first line; fires
    `ended` with (stdout, stderr, exit code)."""

    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        first = b"\n" not in self.out
        self.out += data
        if first and b"\n" in self.out:
            self.transport.signalProcess("INT")

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback((self.out, self.err, reason.value.exitCode))


@pytest_twisted.ensureDeferred
async def test_watch_stopped_with_ctrl_c_exits_0(fake_server):
    proc = InterruptOnFirstLine()
    url = f"{fake_server.base}/ws/check/premium/?{GOOD}"
    reactor.spawnProcess(
        proc, sys.executable, [sys.executable, "-m", "tradebot", "watch", url], env=dict(os.environ)
    )
    out, err, code = await proc.ended
    assert code == 0, err
    assert err == b""
    assert json.loads(out.decode().splitlines()[0]) == {"message": "hello"}


def test_show_prints_the_plan_state_headroom_and_history(run, store):
    from tradebot.plans.engine import DAILY_BREACH, PlanEvent, PlanState
    from tradebot.store.planstore import thd_save_plan_state

    add(run, "alice", "--balance", "9700")
    account = store.account_by_name("alice")
    assert "plan state:      none yet" in run("account", "show", "alice")[1]
    # the default plan, a 10,000 challenge whose phase 2 started at 10,200: 5% of
    # 10,000 under the day's 10,000 (floor 9,500), 10% of it under 10,200 (9,200);
    # 0.5% (50) kept back when sizing
    state = PlanState(
        2, 3, Decimal(10200), "2026-03-02", Decimal(10000), Decimal(10200), 3, "2026-03-02", "paused_today",
        initial_capital=Decimal(10000),
    )
    breach = PlanEvent(
        DAILY_BREACH, 1772449200.0, 2, 3, Decimal(9700), Decimal("9499.5"), "equity below the daily loss limit"
    )
    store.run(thd_save_plan_state, account.id, state, [breach], 1772449200.0)
    code, out, err = run("account", "show", "alice")
    assert code == 0, err
    lines = out.splitlines()
    assert "phase/step:      2/3" in lines
    assert "plan status:     paused_today, phase 2 (verification) step 3" in lines
    assert "trading day:     2026-03-02 (starts 00:00 Europe/Prague)" in lines
    assert "day start:       10000.00 (equity 10000.00)" in lines
    assert "initial capital: 10000.00" in lines
    assert "daily headroom:  150.00 (equity floor 9500.00; 50.00 kept back)" in lines
    assert "total headroom:  450.00 (equity floor 9200.00; 50.00 kept back)" in lines
    assert "target:          10700.00" in lines
    event = next(l for l in lines if "daily_breach" in l)
    assert event.split()[:8] == ["2026-03-02", "11:00:00", "daily_breach", "2", "3", "9700.00", "9499.50", "equity"]


def test_admin_token_prints_a_new_token_keeps_only_its_hash_and_replaces_the_last(run, store):
    from tradebot.store import serverkeys

    code, out, _ = run("admin-token")
    first = out.strip().splitlines()[-1]
    assert code == 0 and len(first) >= 32
    assert store.run(serverkeys.thd_admin_token_hash) == hash_token(first)
    code, out, _ = run("admin-token")
    second = out.strip().splitlines()[-1]
    assert second != first and store.run(serverkeys.thd_admin_token_hash) == hash_token(second)
    with store.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT value FROM server_settings")).scalars().all()
    assert first not in kept and second not in kept


def test_account_show_names_the_accounts_broker_as_the_server_does(run, store):
    from tradebot.store import serverkeys

    url = "mt5://?path=C:\\MT5\\terminal64.exe&login=51234567&server=Broker-Demo"
    assert run("account", "add", "mia", "--symbols", "EURUSD", "--broker-url", url)[0] == 0
    code, out, _ = run("account", "show", "mia")
    [name] = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("broker name:")]
    key = serverkeys.broker_name_key(store)
    assert name == serverkeys.broker_name("mt5://c:\\mt5\\terminal64.exe", key)
    assert run("account", "set", "mia", "--broker-url", url + "&name=ftmo-1")[0] == 0
    assert "broker name:     ftmo-1" in run("account", "show", "mia")[1]

"""
Broker passwords encrypted at rest: `tradebot.store.credentials` itself, the admin
command that stores them (its password read from a real standard input), and
the server's use of them: the MT5 backend logs in with the stored password,
and an account whose password cannot be decrypted never trades while the
other accounts carry on. The whole path through a real server, worker
process and websocket clients is in test_e2e_credentials.py.
"""

import io
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from tradebot.broker import BUY, BrokerBackend, BrokerUnavailable
from tradebot.brokers.mt5.links import DirectLink, WorkerLink
from tradebot.brokers.registry import backend_from_url
from tradebot.plans.files import load_plan
from tradebot.signals.strategies import Signal
from tradebot.store import credentials, records
from tradebot.store.credentials import KEY_ENV, InvalidKey, Keyring, MissingKey, WrongKey, new_key
from tradebot.store.records import Account
from tradebot.store.tokens import hash_token
from tradebot.trading import messages
from tradebot.trading.backends import LOCKED_REASON, Backends, UnavailableBroker
from tradebot.trading.manager import SessionManager

from .broker_contract import fails_with
from .fakemt5.fake_terminal import FakeTerminal
from .scripted import ScriptedBroker, ScriptedStrategy
from .test_cli import assert_refused, db_bytes, run, snapshot, store  # noqa: F401 (fixtures)
from .test_loops import Recorder

PASSWORD = "S3cret-broker-pw"
TERMINAL = r"mt5://?path=C:\Program Files\MetaTrader 5\terminal64.exe&login=51234567"


@pytest.fixture
def key(monkeypatch):
    """A fresh key, set as the environment's $TRADEBOT_SECRET_KEY."""
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture
def log_lines():
    """Every line logged during the test, formatted."""
    lines = []

    def observer(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


# -- the module -----------------------------------------------------------------


def test_a_secret_round_trips_and_its_ciphertext_holds_nothing_of_it():
    keyring = Keyring([new_key()])
    token = keyring.encrypt(PASSWORD)
    assert keyring.decrypt(token) == PASSWORD
    assert PASSWORD not in token and PASSWORD.encode().hex() not in token
    assert keyring.encrypt(PASSWORD) != token  # a fresh IV each time
    assert keyring.decrypt(keyring.encrypt("pässwörd ")) == "pässwörd "


def test_keys_are_random_and_never_shown():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    key = keys.pop()
    assert len(key) == 44 and key.endswith("=")
    keyring = Keyring([key])
    assert key not in repr(keyring) and "1 key" in repr(keyring)


def test_no_key_an_invalid_key_and_the_wrong_key_are_told_apart_without_showing_a_key():
    with pytest.raises(MissingKey, match=f"{KEY_ENV} is not set.*tradebot secret-key"):
        Keyring.from_environment({})
    with pytest.raises(MissingKey):
        Keyring.from_environment({KEY_ENV: " , "})
    good = new_key()
    bad = "not-a-key-" + good[:20]
    with pytest.raises(InvalidKey, match="key 2 of 2 is not a key") as raised:
        Keyring.from_environment({KEY_ENV: f"{good},{bad}"})
    assert bad not in str(raised.value) and good not in str(raised.value)
    token = credentials.encrypt(PASSWORD, {KEY_ENV: good})
    other = new_key()
    with pytest.raises(WrongKey, match=f"no key in {KEY_ENV} opens") as raised:
        credentials.decrypt(token, {KEY_ENV: other})
    assert other not in str(raised.value) and PASSWORD not in str(raised.value)
    with pytest.raises(WrongKey):  # altered ciphertext
        credentials.decrypt(token[:-8] + "AAAAAAA=", {KEY_ENV: good})


def test_rotation_the_first_key_encrypts_every_key_decrypts():
    old, new = new_key(), new_key()
    stored = credentials.encrypt(PASSWORD, {KEY_ENV: old})
    both = {KEY_ENV: f"{new}, {old}"}
    assert credentials.decrypt(stored, both) == PASSWORD
    # what is encrypted now opens with the new key alone
    assert credentials.decrypt(credentials.encrypt(PASSWORD, both), {KEY_ENV: new}) == PASSWORD
    rotated = Keyring.from_environment(both).rotate(stored)
    assert credentials.decrypt(rotated, {KEY_ENV: new}) == PASSWORD
    with pytest.raises(WrongKey):
        credentials.decrypt(rotated, {KEY_ENV: old})


def test_the_worker_never_gets_the_key(key):
    assert KEY_ENV not in WorkerLink(Clock()).env
    assert KEY_ENV not in WorkerLink(Clock(), env={KEY_ENV: key, "OTHER": "1"}).env


# -- the admin command ---------------------------------------------------------------


def stdin(monkeypatch, text):
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def test_add_stores_the_password_encrypted_and_nowhere_in_clear(run, db_url, store, key, monkeypatch):
    stdin(monkeypatch, PASSWORD + "\n")
    code, out, err = run("account", "add", "mia", "--symbols", "EURUSD", "--broker-url", TERMINAL, "--broker-password-stdin")
    assert code == 0, err
    assert "broker password stored, encrypted" in out
    assert PASSWORD not in out + err
    account = store.account_by_name("mia")
    assert credentials.decrypt(account.broker_password_encrypted) == PASSWORD
    assert PASSWORD.encode() not in db_bytes(db_url)
    assert PASSWORD not in repr(account) and account.broker_password_encrypted not in repr(account)
    code, out, _ = run("account", "show", "mia")
    assert "broker password: stored, encrypted" in out and account.broker_password_encrypted not in out


def test_set_stores_replaces_and_clears_the_password(run, store, key, monkeypatch):
    assert run("account", "add", "mia", "--symbols", "EURUSD", "--broker-url", TERMINAL)[0] == 0
    stdin(monkeypatch, "first\n")
    assert run("account", "set", "mia", "--broker-password-stdin")[0] == 0
    first = store.account_by_name("mia").broker_password_encrypted
    assert credentials.decrypt(first) == "first"
    stdin(monkeypatch, "second \r\n")  # a trailing space is the password's; the line end is not
    assert run("account", "set", "mia", "--broker-password-stdin", "--plan", "fixed")[0] == 0
    account = store.account_by_name("mia")
    assert credentials.decrypt(account.broker_password_encrypted) == "second " and account.plan == "fixed"
    assert run("account", "set", "mia", "--clear-broker-password")[0] == 0
    assert store.account_by_name("mia").broker_password_encrypted is None
    code, out, _ = run("account", "show", "mia")
    assert "broker password: none stored" in out


def test_without_a_key_nothing_is_stored_and_the_message_says_what_to_do(run, db_url, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert run("account", "add", "mia", "--symbols", "EURUSD", "--broker-url", TERMINAL)[0] == 0
    before = snapshot(db_url)
    for args in (
        ("account", "set", "mia", "--broker-password-stdin"),
        ("account", "add", "bob", "--symbols", "EURUSD", "--broker-url", TERMINAL, "--broker-password-stdin"),
    ):
        stdin(monkeypatch, PASSWORD + "\n")
        code, out, err = run(*args)
        assert_refused(code, out, err, f"{KEY_ENV} is not set", "tradebot secret-key")
        assert sys.stdin.read() == PASSWORD + "\n"  # the key is checked before the password is read
        assert snapshot(db_url) == before
    monkeypatch.setenv(KEY_ENV, "not a key")
    stdin(monkeypatch, PASSWORD + "\n")
    code, out, err = run(*args)
    assert_refused(code, out, err, f"{KEY_ENV}: its key is not a key")
    assert snapshot(db_url) == before


@pytest.mark.parametrize(
    "args, complaint",
    [
        (("account", "add", "bob", "--symbols", "EURUSD", "--broker-password-stdin"), "give --broker-url too"),
        (
            ("account", "add", "bob", "--symbols", "EURUSD", "--broker-url", "mt5://?path=x", "--broker-password-stdin"),
            "names no login=",
        ),
        (("account", "set", "paper", "--broker-password-stdin"), "give --broker-url too"),
        (("account", "set", "mia", "--broker-url", "default", "--broker-password-stdin"), "give --broker-url too"),
        (("account", "set", "mia", "--broker-password-stdin", "--clear-broker-password"), "not allowed with"),
    ],
)
def test_a_password_with_no_terminal_login_to_use_it_is_refused(run, db_url, key, monkeypatch, args, complaint):
    assert run("account", "add", "mia", "--symbols", "EURUSD", "--broker-url", TERMINAL)[0] == 0
    assert run("account", "add", "paper", "--symbols", "EURUSD")[0] == 0
    before = snapshot(db_url)
    stdin(monkeypatch, PASSWORD + "\n")
    code, out, err = run(*args)
    assert_refused(code, out, err, complaint)
    assert snapshot(db_url) == before


def test_an_empty_password_is_refused(run, db_url, key, monkeypatch):
    assert run("account", "add", "mia", "--symbols", "EURUSD", "--broker-url", TERMINAL)[0] == 0
    before = snapshot(db_url)
    for text in ("", "\n"):
        stdin(monkeypatch, text)
        code, out, err = run("account", "set", "mia", "--broker-password-stdin")
        assert_refused(code, out, err, "no password on standard input")
    assert snapshot(db_url) == before


def test_reencrypt_moves_every_password_to_the_new_key_all_or_nothing(run, db_url, store, key, monkeypatch):
    for name in ("mia", "noah"):
        stdin(monkeypatch, f"{name}-pw\n")
        assert run("account", "add", name, "--symbols", "EURUSD", "--broker-url", TERMINAL, "--broker-password-stdin")[0] == 0
    assert run("account", "add", "paper", "--symbols", "EURUSD")[0] == 0
    new = new_key()
    # a key that opens neither: refused, nothing changed
    monkeypatch.setenv(KEY_ENV, new)
    before = snapshot(db_url)
    code, out, err = run("account", "reencrypt")
    assert_refused(code, out, err, "account mia", "nothing was changed")
    assert snapshot(db_url) == before
    # the new key first, the old one still there: both move to the new key
    monkeypatch.setenv(KEY_ENV, f"{new},{key}")
    code, out, err = run("account", "reencrypt")
    assert code == 0, err
    assert "2 stored broker password(s)" in out and "mia, noah" in out
    for name in ("mia", "noah"):
        token = store.account_by_name(name).broker_password_encrypted
        assert credentials.decrypt(token, {KEY_ENV: new}) == f"{name}-pw"
        with pytest.raises(WrongKey):
            credentials.decrypt(token, {KEY_ENV: key})
    assert store.account_by_name("paper").broker_password_encrypted is None


def test_secret_key_prints_a_new_key_alone(capsys):
    from tradebot.cli import main

    assert main(["secret-key"]) == 0
    first = capsys.readouterr().out
    assert main(["secret-key"]) == 0
    second = capsys.readouterr().out
    assert first.count("\n") == 1 and first != second
    assert Keyring.from_environment({KEY_ENV: first.strip()}).size == 1


@pytest.mark.backends("sqlite")
def test_the_password_is_read_from_a_real_standard_input_and_never_from_argv(db_url, key, store):
    base = [sys.executable, "-m", "tradebot", "--db", db_url, "account"]
    add = subprocess.run(
        base + ["add", "mia", "--symbols", "EURUSD", "--broker-url", TERMINAL, "--broker-password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    assert add.returncode == 0, add.stderr
    assert PASSWORD not in add.stdout + add.stderr
    assert credentials.decrypt(store.account_by_name("mia").broker_password_encrypted) == PASSWORD
    # there is no option that takes the password itself
    given = subprocess.run(
        base + ["set", "mia", "--broker-password", PASSWORD],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    assert given.returncode == 2 and PASSWORD not in given.stdout


# -- the server's use of it ---------------------------------------------------------------


def account(id, name, url=TERMINAL, encrypted=None, always_on=False):
    return Account(
        id, name, ("EURUSD",), "default", 1, 1, Decimal(10000), 1, always_on, False, 0.0,
        broker=url, broker_password_encrypted=encrypted,
    )


class Terminals:
    """`Backends` whose MT5 backends reach fake terminals in this process, on
    a Clock: one terminal per folder, made with the options given for it."""

    def __init__(self, **options):
        self.fakes = {
            folder: FakeTerminal(path=rf"C:\{folder}\terminal64.exe", **opts) for folder, opts in options.items()
        }
        self.clock = Clock()
        self.clock.advance(next(iter(self.fakes.values())).now)
        self.backends = Backends(_NoBackend(), self.clock, make=self.make)

    def make(self, url):
        backend = backend_from_url(url, reactor=self.clock)
        backend.link = DirectLink(self.fakes[backend.path.split("\\")[-2]])
        return backend


class _NoBackend(BrokerBackend):
    """The server's own backend, unused here."""

    def start(self):
        return defer.succeed(None)


def url_of(folder):
    return rf"mt5://?path=C:\{folder}\terminal64.exe&login=51234567"


def test_the_terminal_logs_in_with_the_accounts_stored_password(key, monkeypatch, log_lines):
    monkeypatch.setenv("TRADEBOT_MT5_PASSWORD", "the-environment-s")  # the stored one wins
    rig = Terminals(A=dict(logged_in=False, password=PASSWORD))
    terminal = rig.fakes["A"]
    broker, _ = rig.backends.broker_for(account(1, "mia", url_of("A"), credentials.encrypt(PASSWORD)))
    assert broker.available and terminal.login_calls == 1
    assert not [line for line in log_lines if PASSWORD in line]


def test_the_stored_password_is_given_before_the_backend_starts_at_server_start(key):
    rig = Terminals(A=dict(logged_in=False, password=PASSWORD))
    terminal = rig.fakes["A"]
    rig.backends.start([account(1, "mia", url_of("A"), credentials.encrypt(PASSWORD))])
    [_, backend] = rig.backends.backends
    assert backend.available and terminal.login_calls == 1  # the first attempt logged in


@pytest.mark.parametrize("problem", ["missing", "wrong", "invalid"])
def test_an_account_whose_password_cannot_be_decrypted_never_reaches_its_terminal(
    key, monkeypatch, logged_errors, problem
):
    stored = credentials.encrypt(PASSWORD)
    if problem == "missing":
        monkeypatch.delenv(KEY_ENV)
    else:
        monkeypatch.setenv(KEY_ENV, new_key() if problem == "wrong" else "garbage")
    rig = Terminals(A=dict(logged_in=False, password=PASSWORD), B={})
    locked = rig.fakes["A"]
    rig.backends.start([account(1, "mia", url_of("A"), stored), account(2, "noah", url_of("B"))])
    broker, _ = rig.backends.broker_for(account(1, "mia", url_of("A"), stored))
    again, _ = rig.backends.broker_for(account(1, "mia", url_of("A"), stored))
    assert isinstance(broker, UnavailableBroker) and isinstance(again, UnavailableBroker)
    assert not broker.available and broker.settled and broker.unavailable_reason == LOCKED_REASON
    assert fails_with(broker.open_positions(), BrokerUnavailable).args == (LOCKED_REASON,)
    # logged once, naming the account and the variable; the terminal never heard of it
    assert logged_errors.take_errors("account mia will not trade") == 1
    assert locked.calls["initialize"] == 0 and locked.login_calls == 0
    # the other account, on another terminal, carries on
    noah, _ = rig.backends.broker_for(account(2, "noah", url_of("B")))
    assert noah.available


def test_a_locked_account_keeps_its_trade_its_clients_hear_why_and_others_trade(inline_store, monkeypatch, logged_errors):
    """The session of an account whose password cannot be decrypted resumes
    with its live trade untouched (neither cancelled nor closed), never checks
    for a signal, and its streaming clients hear `broker unavailable` with the
    reason; an account on the server's broker trades meanwhile."""
    stored = credentials.encrypt(PASSWORD, {KEY_ENV: new_key()})
    monkeypatch.delenv(KEY_ENV, raising=False)
    mia = inline_store.add_account(
        "mia", ("EURUSD",), Decimal(10000), "default", 1, True, hash_token("m"), broker=TERMINAL,
        broker_password_encrypted=stored,
    ).result
    pat = inline_store.add_account("pat", ("XAUUSD",), Decimal(10000), "default", 1, False, hash_token("p")).result
    trade = inline_store.record_intent(mia.id, "EURUSD", "BUY", Decimal("0.1"), Decimal(1), Decimal(2), 1, 1).result
    clock = Clock()
    paper = ScriptedBroker(clock)

    class Server:
        def broker_for(self, key, balance):
            return paper

    built = []
    backends = Backends(Server(), clock, make=lambda url: built.append(url))
    strategy = ScriptedStrategy()
    manager = SessionManager(inline_store, backends, strategy, load_plan, clock, 60, 1)
    manager.startService()
    assert manager.ready.called
    locked = manager.get(mia.id)  # resumed: always-on, with a live trade
    assert isinstance(locked._broker, UnavailableBroker) and built == []  # no backend for it
    client = Recorder()
    locked.start_streaming(client)
    assert client.take() == [messages.broker_unavailable(LOCKED_REASON)]

    strategy.queue("XAUUSD", Signal(BUY, Decimal("5.00"), Decimal("10.00")))
    other = Recorder()
    manager.session_for(pat, other).result.start_streaming(other)
    assert messages.trade_placed("XAUUSD") in other.take()
    clock.pump([1] * 300)
    [live] = inline_store.live_trades(mia.id).result
    assert (live.id, live.status) == (trade.id, records.PENDING)
    assert client.take() == [] and strategy.evaluations == 1  # pat's check alone
    assert logged_errors.take_errors("account mia will not trade") == 1
    manager.stopService()

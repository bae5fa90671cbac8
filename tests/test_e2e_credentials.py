"""
Stored broker passwords end to end: the plugin's service, an account whose
password was stored with the admin command, the MT5 broker worker as a real
process importing the fake MetaTrader5 module, a FakeTerminal (not logged in,
so it needs the password) served from this test, real websocket clients.
"""

import io
import sys

import pytest
import pytest_twisted
import treq
from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher

from tradebot.cli import main as admin
from tradebot.store.credentials import KEY_ENV, new_key
from tradebot.trading import messages
from tradebot.trading.backends import LOCKED_REASON

from .test_e2e import make_admin_token, start_server
from .test_e2e_mt5 import add, mt5_url
from .test_mt5_links import Terminal, fake_environment
from .wsclient import connect, message_is

PASSWORD = "S3cret-broker-pw"
LOGIN = 51234567


@pytest.fixture
def terminal(monkeypatch):
    """A fake terminal on no account, whose account's password is `PASSWORD`,
    its market moving half an hour every half second (see test_e2e_mt5)."""
    terminal = Terminal(logged_in=False, password=PASSWORD)
    for key, value in fake_environment(terminal.address).items():
        monkeypatch.setenv(key, value)
    mover = task.LoopingCall(terminal.fake.advance, 1800)
    mover.start(0.5)
    yield terminal
    mover.stop()
    pytest_twisted.blockon(terminal.stop())


@pytest.fixture
def log_lines():
    """Every line the server logs during the test, formatted."""
    lines = []

    def observer(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def add_with_password(db_url, capsys, monkeypatch, name):
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    return add(db_url, capsys, name, "--broker-url", f"{mt5_url()}&login={LOGIN}", "--broker-password-stdin")


def process_files(pid):
    """The environment and the command line of a running process, as bytes."""
    with open(f"/proc/{pid}/environ", "rb") as environ, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return environ.read(), cmdline.read()


@pytest_twisted.ensureDeferred
async def test_the_terminal_logs_in_with_the_stored_password_which_goes_nowhere_else(
    db_url, capsys, monkeypatch, terminal, log_lines
):
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    monkeypatch.setenv("TRADEBOT_MT5_PASSWORD", "not-the-password")  # the stored one wins
    token = add_with_password(db_url, capsys, monkeypatch, "mia")
    service, url = await start_server(db_url, signal_interval="0.3", monitor_interval="0.2")
    try:
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        await client.wait_for(message_is(messages.TRADE_PLACED), timeout=60)
        assert terminal.fake.login_calls == 1 and terminal.server.calls.count("login") == 1
        [_, backend] = service.backends.backends
        environ, cmdline = process_files(backend.link.pid)
        for secret in (PASSWORD, key):
            assert secret.encode() not in environ + cmdline
        assert KEY_ENV.encode() not in environ
        client.sendClose()
        await client.closed
    finally:
        await service.stopService()
    assert log_lines and not [line for line in log_lines if PASSWORD in line or key in line]


@pytest_twisted.ensureDeferred
async def test_without_the_key_the_account_does_not_trade_its_clients_hear_why_and_others_trade(
    db_url, capsys, monkeypatch, terminal, logged_errors, log_lines
):
    monkeypatch.setenv(KEY_ENV, new_key())
    mia = add_with_password(db_url, capsys, monkeypatch, "mia")
    pat = add(db_url, capsys, "pat")  # on the server's paper broker
    admin_token = make_admin_token(db_url)
    monkeypatch.delenv(KEY_ENV)
    service, url = await start_server(db_url, signal_interval="0.3", monitor_interval="0.2")
    try:
        locked = await connect(url + "?" + mia)
        other = await connect(url + "?" + pat)
        for client in (locked, other):
            client.send({"msg": "ping"})
        told = await locked.wait_for(message_is(messages.BROKER_UNAVAILABLE), timeout=30)
        assert told["data"]["reason"] == LOCKED_REASON
        await other.wait_for(message_is(messages.TRADE_PLACED), timeout=60)
        # mia never checked for a signal, and her terminal was never reached
        assert not [m for m in locked.received if m["message"] == messages.CHECKING]
        assert terminal.server.calls == [] and service.backends.backends == [service.backend]
        # and the operator's health check says which account and why
        response = await treq.get(
            url.replace("ws://", "http://").split("/ws/")[0] + "/health",
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        health = await response.json()
        assert response.code == 503 and list(health["accounts"]) == ["mia"]
        assert KEY_ENV in health["accounts"]["mia"] and health["reasons"] == [f"account mia: {health['accounts']['mia']}"]
        for client in (locked, other):
            client.sendClose()
            await client.closed
    finally:
        await service.stopService()
    assert logged_errors.take_errors("account mia will not trade") == 1
    [line] = [line for line in log_lines if "account mia will not trade" in line]
    assert f"{KEY_ENV} is not set" in line


@pytest_twisted.ensureDeferred
async def test_no_login_server_or_path_reaches_health_metrics_or_a_log_line(
    db_url, capsys, monkeypatch, terminal, log_lines
):
    monkeypatch.setenv(KEY_ENV, new_key())
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    server = terminal.fake._account["server"]  # the terminal is not logged in yet
    url = f"{mt5_url()}&login={LOGIN}&server={server}"
    token = add(db_url, capsys, "mia", "--broker-url", url, "--broker-password-stdin")
    assert admin(["--db", db_url, "account", "show", "mia"]) == 0
    [name] = [line.split(":", 1)[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("broker name:")]
    admin_token = make_admin_token(db_url)
    service, ws_url = await start_server(
        db_url, "0.3", "0.2", "--admin-port", "tcp:0:interface=127.0.0.1"
    )
    public = ws_url.replace("ws://", "http://").split("/ws/")[0]
    private = f"http://127.0.0.1:{service.admin_port.getHost().port}"
    try:
        client = await connect(ws_url + "?" + token)
        client.send({"msg": "ping"})
        await client.wait_for(message_is(messages.TRADE_PLACED), timeout=60)  # logged in, trading
        [backend] = service.backends.backends[1:]
        assert backend.name == name and name.startswith("mt5-")
        seen = []
        for base, headers in ((private, {}), (public, {"Authorization": f"Bearer {admin_token}"})):
            for path in ("/health", "/metrics"):
                response = await treq.get(base + path, headers=headers)
                assert response.code == 200
                seen.append(await response.text())
        assert all(name in text for text in seen)  # named, opaquely
        client.sendClose()
        await client.closed
    finally:
        await service.stopService()
    assert any(name in line for line in log_lines)
    for text in seen + log_lines:
        for private_part in (str(LOGIN), server, "terminal64", "MetaTrader 5"):
            assert private_part not in text, text

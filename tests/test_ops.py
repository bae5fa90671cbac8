"""
What an operator watches and sets: ``/health``, ``/metrics`` (whole on an
admin port of their own, or on the websocket's port with the admin token,
where anyone else gets the status alone), JSON logs, and the websocket limits
as options. Brokers are named opaquely: no login, server or path of a
customer reaches /health, /metrics or a log line. Real servers on 127.0.0.1,
real HTTP and websocket clients.
"""

import json
import os
import signal
import sys

import pytest
import pytest_twisted
import sqlalchemy as sa
import treq
from sqlalchemy.engine import make_url
from twisted.internet import defer, protocol, reactor

from tradebot.trading import messages

from .test_e2e import add_account, make_admin_token, start_server
from .wsclient import connect, message_is


def http_base(url: str) -> str:
    """http://host:port of a websocket URL."""
    return "http://" + url.split("//", 1)[1].split("/", 1)[0]


async def get(url: str, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    response = await treq.get(url, headers=headers)
    return response.code, await response.text()


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus's text format."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    raise AssertionError(f"no sample {wanted} in:\n{text}")


@pytest_twisted.ensureDeferred
async def test_health_and_metrics_follow_a_trading_session(db_url, capsys):
    token = add_account(db_url, capsys)
    admin_token = make_admin_token(db_url)
    service, url = await start_server(db_url)
    try:
        code, body = await get(http_base(url) + "/health", admin_token)
        assert code == 200
        report = json.loads(body)
        assert report["status"] == "ok" and report["database"] == "ok"
        assert report["brokers"] == {"paper": "ok"}

        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        done = await client.wait_for(message_is(messages.TRADE_COMPLETED), timeout=60)
        await client.wait_for(message_is(messages.CHECKING), since=len(client.received))
        code, text = await get(http_base(url) + "/metrics", admin_token)
        assert code == 200
        assert metric(text, "tradebot_connections") == 1
        assert metric(text, "tradebot_streaming_connections") == 1
        assert metric(text, "tradebot_sessions") == 1
        assert metric(text, "tradebot_trades_total", result=done["data"]["result"]) >= 1
        sent = metric(text, "tradebot_messages_sent_total")
        assert sent >= len(client.received) - 1  # all but the welcome go through the session
        assert metric(text, "tradebot_loop_lag_seconds_count") >= 0
        assert metric(text, "tradebot_database_errors_total", kind="failed") == 0
        assert token not in text
        client.sendClose()
        await client.closed
        code, text = await get(http_base(url) + "/metrics", admin_token)
        assert metric(text, "tradebot_connections") == 0
    finally:
        await service.stopService()


@pytest.mark.backends("postgresql")
@pytest_twisted.ensureDeferred
async def test_health_is_503_with_the_reason_while_the_database_is_away(db_url, capsys):
    from . import pg

    add_account(db_url, capsys)
    admin_token = make_admin_token(db_url)
    service, url = await start_server(db_url, "0.3", "0.1", "--admin-port", "tcp:0:interface=127.0.0.1")
    admin = f"http://127.0.0.1:{service.admin_port.getHost().port}"
    name = make_url(db_url).database
    try:
        with pg._admin_engine().connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        code, body = await get(admin + "/health")
        assert code == 503
        report = json.loads(body)
        assert report["status"] == "unavailable" and report["reasons"][0].startswith("database:")
        # the public port: the same status, no details, even with the token
        # (which cannot be checked while the database is away)
        code, body = await get(http_base(url) + "/health", admin_token)
        assert (code, json.loads(body)) == (503, {"status": "unavailable"})
        with pg._admin_engine().connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        code, body = await get(admin + "/health")
        assert code == 200
        code, body = await get(http_base(url) + "/health")
        assert (code, json.loads(body)) == (200, {"status": "ok"})
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_health_is_503_while_a_broker_is_unavailable(db_url, monkeypatch):
    # an MT5 terminal whose worker finds no MetaTrader5 module to import
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if "fakemt5" not in p))
    admin_token = make_admin_token(db_url)
    service, url = await start_server(db_url, "60", "1", broker="mt5://?heartbeat=0.2")
    try:
        backend = service.backend
        if not backend.settled:
            await backend.first_attempt
        code, body = await get(http_base(url) + "/health", admin_token)
        report = json.loads(body)
        assert code == 503 and report["database"] == "ok"
        [reason] = report["reasons"]
        assert reason.startswith(f"broker {backend.name}:") and "cannot import MetaTrader5" in reason
        assert backend.name.startswith("mt5-")
        code, text = await get(http_base(url) + "/metrics", admin_token)
        assert metric(text, "tradebot_broker_available", broker=backend.name) == 0
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_an_admin_port_serves_health_and_metrics_whole_and_alone(db_url):
    service, url = await start_server(db_url, "60", "1", "--admin-port", "tcp:0:interface=127.0.0.1")
    try:
        admin = f"http://127.0.0.1:{service.admin_port.getHost().port}"
        code, body = await get(admin + "/health")
        assert code == 200 and json.loads(body)["brokers"] == {"paper": "ok"}
        assert (await get(admin + "/metrics"))[0] == 200
        assert (await get(admin + "/ws/check/premium/"))[0] == 404
        # the public port: the status alone for a load balancer, no metrics
        code, body = await get(http_base(url) + "/health")
        assert (code, json.loads(body)) == (200, {"status": "ok"})
        assert (await get(http_base(url) + "/metrics"))[0] == 401
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_the_public_port_gives_health_details_and_metrics_to_the_admin_token_alone(db_url):
    admin_token = make_admin_token(db_url)
    service, url = await start_server(db_url, "60", "1")
    base = http_base(url)
    try:
        for token in (None, "not-the-token", admin_token[:-1]):
            code, body = await get(base + "/health", token)
            assert (code, json.loads(body)) == (200, {"status": "ok"})
            code, body = await get(base + "/metrics", token)
            assert code == 401 and "tradebot_" not in body
        code, body = await get(base + "/health", admin_token)
        assert code == 200 and json.loads(body)["database"] == "ok"
        code, text = await get(base + "/metrics", admin_token)
        assert code == 200 and metric(text, "tradebot_connections") == 0
        # a new token replaces the old one
        newer = make_admin_token(db_url)
        assert (await get(base + "/metrics", admin_token))[0] == 401
        assert (await get(base + "/metrics", newer))[0] == 200
    finally:
        await service.stopService()


CUSTOMER_URL = "mt5://?path=C:\\MT5\\terminal64.exe&login=51234567&server=Broker-Demo"


def test_a_broker_named_in_its_url_keeps_that_name_and_a_bad_name_is_refused():
    from tradebot.broker import BrokerURL
    from tradebot.brokers.mt5.settings import settings_from_url
    from tradebot.brokers.registry import backend_from_url
    from tradebot.trading.backends import Backends

    built = []

    def make(url):
        backend = backend_from_url(url, reactor=reactor)
        backend.start = lambda: defer.succeed(None)
        built.append(backend)
        return backend

    backends = Backends(backend_from_url("paper", reactor=reactor), reactor, make=make)
    backends._own_backend(CUSTOMER_URL + "&name=ftmo-1")
    backends._own_backend("mt5linux://10.0.0.7:18812")
    assert built[0].name == "ftmo-1"
    assert built[1].name.startswith("mt5-") and "10.0.0.7" not in built[1].name
    # stable for one key, another under another key
    again = Backends(backend_from_url("paper", reactor=reactor), reactor, make=make)
    again.name_key = backends.name_key
    again._own_backend("mt5linux://10.0.0.7:18812")
    assert built[2].name == built[1].name
    with pytest.raises(ValueError, match="name must be"):
        settings_from_url(BrokerURL.parse(CUSTOMER_URL + "&name=a%20b"))


@pytest_twisted.ensureDeferred
async def test_the_websocket_limits_are_options(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url, "60", "1", "--max-message-size", "64", "--message-burst", "2")
    try:
        client = await connect(url + "?" + token)
        client.send({"msg": "stop", "padding": "x" * 80})
        assert await client.closed == 1009
        client = await connect(url + "?" + token)
        for _ in range(4):
            client.send({"msg": "stop"})
        assert await client.closed == 1008
    finally:
        await service.stopService()


class _Lines(protocol.ProcessProtocol):
    """A process's standard output, line by line; `wait_for(predicate)`."""

    def __init__(self):
        self.lines = []
        self._buffer = b""
        self._waiters = []
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode()
            self.lines.append(line)
            for waiter in list(self._waiters):
                if waiter[0](line):
                    self._waiters.remove(waiter)
                    waiter[1].callback(line)

    def processEnded(self, reason):
        self.ended.callback((reason.value.exitCode, reason.value.signal))

    def wait_for(self, predicate, timeout=60):
        for line in self.lines:
            if predicate(line):
                return defer.succeed(line)
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return d.addTimeout(timeout, reactor)


@pytest_twisted.ensureDeferred
async def test_json_logs_are_one_object_a_line_with_the_sessions_fields(db_url, capsys, tmp_path):
    token = add_account(db_url, capsys)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    output = _Lines()
    process = reactor.spawnProcess(
        output,
        twistd,
        [twistd, "--nodaemon", "--pidfile=", "tradebot", "--log-format", "json",
         "--port", "tcp:0:interface=127.0.0.1", "--db", db_url, "--broker", "paper://?seed=11&speed=300",
         "--signal-interval", "0.3", "--monitor-interval", "0.1"],
        env=os.environ,
        path=str(tmp_path),
    )
    try:
        listening = json.loads(await output.wait_for(lambda line: "tradebot listening on" in line))
        port = int(listening["text"].split("(")[1].split(")")[0].rsplit(":", 1)[1])
        client = await connect(f"ws://127.0.0.1:{port}/ws/check/premium/?{token}")
        client.send({"msg": "ping"})
        placed = await client.wait_for(message_is(messages.TRADE_PLACED), timeout=60)
        await output.wait_for(lambda line: "opened" in line and '"trade_id"' in line)
        client.sendClose()
        await client.closed
    finally:
        process.signalProcess(signal.SIGTERM)
        # twistd ends by the signal it was sent, after a clean shutdown
        assert await output.ended in ((None, signal.SIGTERM), (0, None))
    records = [json.loads(line) for line in output.lines if line.strip()]
    assert len(records) == len([line for line in output.lines if line.strip()])
    assert all({"time", "level", "namespace", "text"} <= set(r) for r in records)
    opened = [r for r in records if " opened, " in r["text"]]
    assert opened and opened[0]["account"] == "alice" and opened[0]["symbol"] == placed["data"]["symbol"]
    assert isinstance(opened[0]["trade_id"], int)
    assert token not in "\n".join(output.lines)
    assert records[-1]["text"] == "Server Shut Down."


@pytest.mark.backends("sqlite")
@pytest_twisted.ensureDeferred
async def test_a_server_that_cannot_start_exits_with_a_failure_status(db_url, tmp_path):
    # a database file in a folder that does not exist: the store cannot open it
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    output = _Lines()
    reactor.spawnProcess(
        output,
        twistd,
        [twistd, "--nodaemon", "--pidfile=", "tradebot", "--log-format", "json",
         "--port", "tcp:0:interface=127.0.0.1", "--db", f"sqlite:///{tmp_path}/missing/folder/x.sqlite"],
        env=os.environ,
        path=str(tmp_path),
    )
    assert await output.ended == (1, None)  # so that Restart=on-failure restarts it
    assert any("tradebot could not start" in json.loads(line)["text"] for line in output.lines if line.strip())


def test_health_and_metrics_show_a_close_the_broker_keeps_refusing():
    from types import SimpleNamespace

    from twisted.internet.task import Clock

    from tradebot.loops import Closing
    from tradebot.server.health import CLOSING_ALARM, HealthCheck
    from tradebot.server.metrics import Metrics

    from .broker_contract import result as fired

    clock = Clock()
    clock.advance(1000)
    session = SimpleNamespace(
        account=SimpleNamespace(name="mia"), live_trades={7: None}, streaming_count=0,
        closing={7: Closing(why="the plan's loss limit was breached", since=1000.0, attempts=3, last_error="market closed")},
    )
    sessions = SimpleNamespace(sessions={1: session})
    store = SimpleNamespace(ping=lambda: defer.succeed(None), health=SimpleNamespace(fault=None))
    check = HealthCheck(store, SimpleNamespace(backends=[]), clock, sessions=sessions)
    report = fired(defer.ensureDeferred(check.report()))
    assert report["parts"]["closing"]["mia"][0]["attempts"] == 3 and report["problems"] == []
    clock.advance(CLOSING_ALARM + 1)
    report = fired(defer.ensureDeferred(check.report()))
    assert report["problems"] == ["account mia: trade 7 not closed after 3 tries (market closed)"]
    metrics = Metrics()
    metrics.watch(lambda: 0, sessions)
    assert metric(metrics.render().decode(), "tradebot_trades_closing") == 1

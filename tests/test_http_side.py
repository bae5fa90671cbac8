"""
The plain-HTTP side of the public port under attack. Each test makes an attack
a review found against a real server on 127.0.0.1 (the plugin's service, a
real socket, raw bytes where no HTTP library would send them) and checks that
it no longer hurts: bodies refused by route before they are read, a deadline
on the whole request, plain-HTTP connections counted per address, the trades
API read a page at a time and rate-limited, webhook secrets kept out of the
log and wrong ones shutting nobody else out, the dashboard's sign-in that
cannot put a token in a URL, a tight CSP, a private SQLite file, and alert
numbers too large to be prices. Then the per-address tables on a Clock:
bounded, forgetting, IPv6 counted by /64.
"""

import json
import os
import stat

import pytest
import pytest_twisted
import sqlalchemy as sa
import treq
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from tradebot.cli import main as admin
from tradebot.server.addresses import address_key
from tradebot.server.api import API_RATE, WEBHOOK_RATE
from tradebot.server.limits import Gatekeeper, Limits
from tradebot.store.db import SyncStore, make_engine
from tradebot.store.schema import trades
from tradebot.trading import alerts

from .test_e2e import add_account, start_server

DEADLINE = 2.0  # --handshake-timeout: the whole request's deadline
SLACK = 3.0  # how late, at most, a timer may fire on a loaded machine


class RawHTTP(protocol.Protocol):
    """A TCP connection that sends what the test writes and keeps what comes
    back; `answered` fires with the first bytes, `ended` with the reactor time
    the connection closed."""

    def __init__(self):
        self.received = b""
        self.answered = defer.Deferred()
        self.ended = defer.Deferred()

    def dataReceived(self, data):
        self.received += data
        if not self.answered.called:
            self.answered.callback(self.received)

    def connectionLost(self, reason):
        self.ended.callback(reactor.seconds())

    @property
    def status(self) -> int:
        return int(self.received.split(b" ", 2)[1])


async def raw(port) -> RawHTTP:
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    return await endpoint.connect(protocol.Factory.forProtocol(RawHTTP))


def port_of(service) -> int:
    return service.port.getHost().port


def subscribe(db_url, capsys, name="alice") -> str:
    assert admin(["--db", db_url, "account", "set", name, "--webhook"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1].split()[-1]


class LogLines:
    """Every line logged while it is entered, formatted."""

    def __enter__(self):
        self.lines = []
        self._observer = lambda event: self.lines.append(formatEvent(event))
        globalLogPublisher.addObserver(self._observer)
        return self.lines

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self._observer)


# -- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, code",
    [
        # 10 GB announced to a path that takes no body: refused before a byte of it is read
        (b"POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n", 413),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", 413),
        (b"POST /webhook/abc HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", 413),
        (b"POST /api/trades HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n", 413),
        # a chunked body where none is taken: its size would be known only as it came
        (b"POST /nothing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"GET /ws/check/premium/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    ],
    ids=["10GB-to-404", "body-on-GET", "webhook-over-64KiB", "post-over-4KiB", "chunked-to-404", "chunked-handshake"],
)
@pytest_twisted.ensureDeferred
async def test_a_body_the_route_does_not_take_is_refused_as_soon_as_the_headers_arrive(db_url, head, code):
    service, _ = await start_server(db_url, "60", "1")
    try:
        client = await raw(port_of(service))
        client.transport.write(head)  # and not one byte of the body
        await client.answered.addTimeout(10, reactor)
        assert client.status == code
        assert b"connection: close" in client.received.lower()
        await client.ended.addTimeout(10, reactor)  # closed, nothing more read
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_chunked_webhook_body_is_refused_the_moment_it_passes_the_limit(db_url, capsys):
    add_account(db_url, capsys)
    secret = subscribe(db_url, capsys)
    service, _ = await start_server(db_url, "60", "1")
    try:
        client = await raw(port_of(service))
        client.transport.write(
            f"POST /webhook/{secret} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
        for _ in range(4):  # 64 KiB: still within the limit, no answer yet
            client.transport.write(chunk)
        client.transport.write(b"1\r\n \r\n")  # one byte past it; the body never ends
        await client.answered.addTimeout(10, reactor)
        assert client.status == 413
        await client.ended.addTimeout(10, reactor)
        store = SyncStore(db_url)
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(alerts.alerts)).scalar() == 0
        store.close()
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_request_whose_body_trickles_is_dropped_at_the_whole_requests_deadline(db_url, capsys):
    add_account(db_url, capsys)
    secret = subscribe(db_url, capsys)
    service, _ = await start_server(db_url, "60", "1", "--handshake-timeout", str(DEADLINE))
    try:
        client = await raw(port_of(service))
        started = reactor.seconds()
        client.transport.write(f"POST /webhook/{secret} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
        # one byte every half second: Twisted's idle timer would restart at each
        dribble = task.LoopingCall(lambda: client.transport.write(b" "))
        dribble.start(0.5)
        try:
            ended = await client.ended.addTimeout(DEADLINE + 10, reactor)
        finally:
            dribble.stop()
        assert DEADLINE - 0.1 < ended - started < DEADLINE + SLACK
        assert client.received == b""  # dropped, not answered
    finally:
        await service.stopService()


# -- connections per address ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_plain_http_connections_are_counted_per_address(db_url):
    service, _ = await start_server(db_url, "60", "1", "--max-connections-per-ip", "3", "--handshake-timeout", "30")
    port = port_of(service)
    try:
        idle = [await raw(port) for _ in range(3)]  # open and silent: each holds a slot
        refused = await raw(port)
        await refused.answered.addTimeout(10, reactor)
        assert refused.status == 429
        await refused.ended.addTimeout(10, reactor)
        idle[0].transport.loseConnection()
        await idle[0].ended
        response = await treq.get(f"http://127.0.0.1:{port}/health")  # a slot is free again
        assert response.code == 200
        await response.content()
        for client in idle[1:]:
            client.transport.loseConnection()
            await client.ended
    finally:
        await service.stopService()


def test_ipv6_addresses_count_by_their_64_and_ipv4_mapped_ones_as_ipv4():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7" and address_key("192.0.2.7") == "192.0.2.7"
    gate = Gatekeeper(Limits(per_ip=1, lock_after_failures=3, slow_after_failures=10), Clock())
    assert gate.http_opened("2001:db8::1")
    assert not gate.http_opened("2001:db8::2")  # the same /64
    assert gate.http_opened("2001:db8:0:1::1")
    for n in range(3):  # failures from one /64, each from another address in it
        gate.failed(f"2001:db8::{n + 10}")
    assert gate.locked("2001:db8::ffff")


def test_the_per_address_tables_stay_bounded_and_forget_quiet_addresses():
    clock = Clock()
    gate = Gatekeeper(Limits(max_tracked=1000, lock_after_failures=2, slow_after_failures=10), clock)
    for n in range(20000):  # more addresses than the tables hold
        ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        gate.before_token(ip)
        gate.failed(ip)
        gate.failed(ip)  # locked out
        gate.webhook_failed(ip)
    tables = (gate._handshakes, gate._failures, gate._webhook_failures, gate._locked, gate._webhook_locked)
    assert all(len(table) <= 1000 for table in tables)
    assert gate.locked("10.0.78.31")  # the latest are kept
    clock.advance(600 + 1)  # past the lockouts and two windows
    gate.before_token("192.0.2.1")  # any call prunes now and then
    assert [len(table) for table in tables] == [1, 0, 0, 0, 0]


# -- the trades API -------------------------------------------------------------------------------


def fill_trades(db_url, account_name, count):
    store = SyncStore(db_url)
    account = store.account_by_name(account_name)
    rows = [
        dict(
            account_id=account.id, symbol="EURUSD", side="BUY", status="closed", comment=f"tb-x{n}",
            lot_size="0.01", stop_loss="1.08", take_profit="1.09", open_price="1.085", close_price="1.09",
            profit="5", result="profit", close_reason="tp", phase=1, step=1, phase_after=1, step_after=1,
            balance_after=str(10000 + 5 * (n + 1)), created_at=float(n), opened_at=float(n), closed_at=n + 0.5,
        )
        for n in range(count)
    ]
    with store.engine.begin() as conn:
        conn.execute(trades.insert(), rows)
        ids = [r.id for r in conn.execute(sa.select(trades.c.id).order_by(trades.c.id))]
    store.close()
    return ids


@pytest_twisted.ensureDeferred
async def test_the_trades_api_reads_a_page_by_id_and_limits_each_token(db_url, capsys):
    token = add_account(db_url, capsys)
    ids = fill_trades(db_url, "alice", 1200)
    service, _ = await start_server(db_url, "60", "1")
    base = f"http://127.0.0.1:{port_of(service)}/api/trades"
    auth = {"Authorization": f"Bearer {token}"}

    async def get(query=""):
        response = await treq.get(base + query, headers=auth)
        return response.code, json.loads(await response.text())

    try:
        code, page = await get()
        assert code == 200
        assert [t["id"] for t in page["trades"]] == ids[-500:]  # the last 500, oldest first
        assert page["next_before"] == ids[-500]
        assert page["equity"][-1]["balance"] == 10000 + 5 * 1200
        code, older = await get(f"?before={page['next_before']}&limit=100")
        assert [t["id"] for t in older["trades"]] == ids[-600:-500]
        code, first = await get(f"?before={ids[50]}&limit=100")
        assert [t["id"] for t in first["trades"]] == ids[:50] and first["next_before"] is None
        assert (await get("?limit=0"))[0] == 400 and (await get("?before=x"))[0] == 400
        codes = [(await get("?limit=1"))[0] for _ in range(API_RATE)]
        assert codes[-1] == 429 and codes.count(200) == API_RATE - 3  # 3 calls made above (a 400 is not one)
    finally:
        await service.stopService()


# -- webhooks -------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_webhook_secret_never_reaches_the_log_however_the_path_is_written(db_url, capsys):
    add_account(db_url, capsys, symbols="EURUSD")
    secret = subscribe(db_url, capsys)
    with LogLines() as lines:
        service, _ = await start_server(db_url, "60", "1", "--strategy", "ma_cross")
        port = port_of(service)
        try:
            body = b'{"symbol": "EURUSD", "action": "buy"}'
            for target in (
                f"/%77ebhook/{secret}",
                f"/webhook/%{secret[0].encode().hex()}{secret[1:]}",
                f"http://127.0.0.1:{port}/webhook/{secret}",
                f"/WEBHOOK/{secret}",
                f"/webhook/{secret}?x=1",
            ):
                client = await raw(port)
                client.transport.write(
                    f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await client.ended.addTimeout(10, reactor)
                assert client.received.startswith(b"HTTP/1.1 "), target
        finally:
            await service.stopService()
    assert any("/webhook/***" in line for line in lines)
    assert not [line for line in lines if secret in line or secret[6:] in line]


@pytest_twisted.ensureDeferred
async def test_a_webhook_is_rate_limited_per_secret(db_url, capsys):
    add_account(db_url, capsys, symbols="EURUSD")
    secret = subscribe(db_url, capsys)
    service, _ = await start_server(db_url, "60", "1")
    url = f"http://127.0.0.1:{port_of(service)}/webhook/{secret}"
    try:
        codes = []
        for _ in range(WEBHOOK_RATE + 1):
            response = await treq.post(url, data=b'{"symbol": "EURUSD", "action": "buy"}')
            codes.append(response.code)
            await response.content()
        assert codes[:WEBHOOK_RATE] == [202] * WEBHOOK_RATE and codes[-1] == 429
    finally:
        await service.stopService()


@pytest.mark.parametrize("value", ["1e999999", "1E+9", 1e12, "-0"])
@pytest_twisted.ensureDeferred
async def test_an_alert_number_no_price_could_be_is_refused(db_url, capsys, value):
    add_account(db_url, capsys, symbols="EURUSD")
    secret = subscribe(db_url, capsys)
    service, _ = await start_server(db_url, "60", "1")
    try:
        body = json.dumps({"symbol": "EURUSD", "action": "buy", "sl_distance": value}).encode()
        response = await treq.post(f"http://127.0.0.1:{port_of(service)}/webhook/{secret}", data=body)
        answer = await response.json()
        assert response.code == 400 and '"sl_distance" must be' in answer["error"]
    finally:
        await service.stopService()


# -- the dashboard, the database file -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_dashboard_cannot_send_a_token_in_a_url_and_connects_to_its_own_origin_only(db_url):
    service, _ = await start_server(db_url, "60", "1")
    try:
        response = await treq.get(f"http://127.0.0.1:{port_of(service)}/")
        page = await response.text()
        csp = response.headers.getRawHeaders(b"content-security-policy")[0].decode()
    finally:
        await service.stopService()
    form = page[page.index("<form"):page.index("</form>")]
    assert 'method="post"' in form and "name=" not in form
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["connect-src"] == "'self'"


def test_a_new_sqlite_database_is_readable_by_its_owner_alone(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "private.sqlite"
        engine = make_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            files = sorted(tmp_path.iterdir())
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        engine.dispose()
    finally:
        os.umask(old)
    assert "private.sqlite-wal" in modes and "private.sqlite-shm" in modes
    assert set(modes.values()) == {0o600}, modes


def test_an_existing_world_readable_database_is_warned_about(tmp_path, logged_errors):
    path = tmp_path / "open.sqlite"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    with LogLines() as lines:
        make_engine(f"sqlite:///{path}").dispose()
    assert [line for line in lines if "may be read by others (mode 644): chmod 600 it" in line]

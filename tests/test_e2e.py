"""
End to end over a real TCP port: the plugin's service on the paper broker, a
real database file, a real websocket client.
"""

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from tradebot.cli import main as admin
from tradebot.server.tap import Options, makeService
from tradebot.store import records
from tradebot.store.db import SyncStore
from tradebot.trading import messages

from .wsclient import connect, message_is

# A fast paper market: 300 simulated seconds a real second, so a trade lasts
# a few seconds and gets several reports at a 0.1 s monitor interval.
FAST_BROKER = "paper://?seed=11&speed=300"


def add_account(db_url, capsys, name="alice", symbols="XAUUSD,EURUSD,GBPUSD,USDJPY,BTCUSD"):
    assert admin(["--db", db_url, "account", "add", name, "--symbols", symbols]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


async def start_server(db_url, signal_interval="0.3", monitor_interval="0.1", *options, broker=FAST_BROKER):
    """The plugin's service on 127.0.0.1 (a free port), started; and the
    websocket URL without a token. `options` are more command-line options."""
    config = Options()
    config.parseOptions(
        [
            "--port", "tcp:0:interface=127.0.0.1",
            "--db", db_url,
            "--broker", broker,
            "--signal-interval", signal_interval,
            "--monitor-interval", monitor_interval,
            *options,
        ]
    )
    service = makeService(config, reactor)
    service.startService()
    port = await service.started
    return service, f"ws://127.0.0.1:{port.getHost().port}/ws/check/premium/"


def make_admin_token(db_url) -> str:
    """A new admin token for the database at `db_url` (as ``tradebot
    admin-token`` makes one)."""
    import time

    from tradebot.store import serverkeys
    from tradebot.store.tokens import new_token

    token = new_token()
    store = SyncStore(db_url)
    try:
        store.prepare()
        store.run(serverkeys.thd_set_admin_token, token, time.time())
    finally:
        store.close()
    return token


def index_of(client, message):
    """Where `message` (the very object) is in what the client received."""
    return next(i for i, m in enumerate(client.received) if m is message)


async def close(client):
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_the_whole_cycle_over_a_real_socket(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url)
    try:
        client = await connect(url + "?" + token)
        welcome = await client.wait_for(lambda m: True)
        assert welcome == messages.welcome(["XAUUSD", "EURUSD", "GBPUSD", "USDJPY", "BTCUSD"])
        client.send({"msg": "ping"})
        await client.wait_for(message_is(messages.CHECKING))
        placed = await client.wait_for(message_is(messages.TRADE_PLACED))
        symbol = placed["data"]["symbol"]
        at = index_of(client, placed)
        # the signal that placed it is the last one before it (a refused one may precede)
        signal = [m for m in client.received[:at] if m["message"] in ("BUY", "SELL")][-1]
        assert signal["data"]["symbol"] == symbol
        # a report every monitor interval until it closes (a fast close may come first)
        report = await client.wait_for(
            lambda m: m["message"] in (messages.ACTIVE_TRADE, messages.TRADE_COMPLETED)
            and m["data"]["symbol"] == symbol,
            since=at,
        )
        if report["message"] == messages.ACTIVE_TRADE:
            assert report["data"]["trade_type"] == signal["message"]
            assert set(report["data"]) >= {
                "symbol", "trade_type", "stop_loss", "take_profit", "open_price", "lot_size", "curent_price",
            }
        done = await client.wait_for(message_is(messages.TRADE_COMPLETED, symbol=symbol), since=at, timeout=60)
        assert done["data"]["result"] in ("profit", "loss")
        since = len(client.received)
        await client.wait_for(message_is(messages.CHECKING), since=since)

        store = SyncStore(db_url)
        [trade] = [t for _, t in store.trades("alice") if t.id == done["data"]["trade_id"]]
        store.close()
        assert trade.status == records.CLOSED and trade.symbol == symbol
        assert float(trade.balance_after) == done["data"]["new_account_balance"]
        assert float(trade.profit) == done["data"]["profit"]
        assert (trade.phase_after, trade.step_after) == (
            done["data"]["current_phase"],
            done["data"]["current_step"],
        )

        client.send({"msg": "stop"})
        client.send({"nonsense": 1})
        error = await client.wait_for(message_is(messages.INVALID_MESSAGE))
        assert error == messages.invalid_message('missing "msg"')
        await close(client)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_bad_tokens_get_403_and_other_paths_404(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url)
    headers = {
        "Upgrade": ["websocket"],
        "Connection": ["Upgrade"],
        "Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQ=="],
        "Sec-WebSocket-Version": ["13"],
    }
    http = url.replace("ws://", "http://")
    try:
        for query in ("?wrong", "", "?token=wrong"):
            response = await treq.get(http + query, headers=headers)
            assert response.code == 403, query
            body = await response.text()
            assert "wrong" not in body
        for path in ("/ws/check/premium/extra?", "/ws/check/other/?", "/ws?", "/ws/check?", "/static/x?", "/api?"):
            response = await treq.get(http.replace("/ws/check/premium/", path) + token, headers=headers)
            assert response.code == 404, path
            await response.text()
        # a plain GET, without the upgrade, is not a page: no status page, no redirect
        for path in ("?" + token, "?redirect=https%3A%2F%2Fevil.example%2F"):
            response = await treq.get(http + path, allow_redirects=False)
            assert response.code == 426, path
            assert b"evil" not in b"".join(response.headers.getRawHeaders("location", []))
            await response.text()
        response = await treq.get(http + "below?" + token)
        assert response.code == 404
        await response.text()
        # the root is the dashboard page, not the websocket
        response = await treq.get(http.replace("/ws/check/premium/", "/"))
        assert response.code == 200 and response.headers.getRawHeaders("content-type")[0].startswith("text/html")
        assert "app.js" in await response.text()
        # the accepted forms: raw query, token=, with and without the slash
        for good in (url + "?" + token, url + "?token=" + token, url.rstrip("/") + "?" + token):
            client = await connect(good)
            await client.wait_for(lambda m: m["message"] == messages.WELCOME)
            await close(client)
        with pytest.raises(ConnectionError):
            await connect(url + "?nope")
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_malformed_binary_and_oversized_frames(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url)
    try:
        client = await connect(url + "?" + token)
        await client.wait_for(lambda m: m["message"] == messages.WELCOME)
        for frame, error in (
            (b"not json", "not a JSON text"),
            (b"[1, 2]", "expected a JSON object"),
            (b'{"msg": "dance"}', 'unknown "msg"; expected "ping" or "stop"'),
        ):
            since = len(client.received)
            client.sendMessage(frame)
            answer = await client.wait_for(message_is(messages.INVALID_MESSAGE), since=since)
            assert answer["error"] == error
        client.sendMessage(b"\x00\x01", isBinary=True)
        assert await client.closed == 1003

        client = await connect(url + "?" + token)
        client.sendMessage(b'{"msg": "' + b"x" * 10000 + b'"}')
        assert await client.closed == 1009

        client = await connect(url + "?" + token)
        for _ in range(200):
            client.sendMessage(b'{"msg": "stop"}')
        assert await client.closed == 1008
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_restart_with_a_trade_open_resumes_it_without_a_new_order(db_url, capsys):
    token = add_account(db_url, capsys, symbols="XAUUSD,EURUSD,GBPUSD,USDJPY,BTCUSD")
    service, url = await start_server(db_url, monitor_interval="0.1")
    client = await connect(url + "?" + token)
    client.send({"msg": "ping"})
    placed = await client.wait_for(message_is(messages.TRADE_PLACED))
    await service.stopService()
    await client.closed

    store = SyncStore(db_url)

    def placed_trades():  # a refused order (a trade that was never placed) may precede it
        return [t for _, t in store.trades("alice") if t.ticket is not None]

    [trade] = placed_trades()
    assert trade.status in (records.OPEN, records.CLOSED)

    restarted, url = await start_server(db_url, monitor_interval="0.1")
    try:
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        if trade.status == records.OPEN:
            first = await client.wait_for(
                lambda m: m["message"] in (messages.ACTIVE_TRADE, messages.TRADE_COMPLETED)
            )
            assert first["data"]["trade_id"] == trade.id
            assert first["data"]["symbol"] == placed["data"]["symbol"]
            assert len(placed_trades()) == 1  # no new order meanwhile
        done = await client.wait_for(message_is(messages.TRADE_COMPLETED), timeout=60)
        assert done["data"]["trade_id"] == trade.id
        first_trade = placed_trades()[0]
        assert (first_trade.id, first_trade.ticket) == (trade.id, trade.ticket)
        assert first_trade.status == records.CLOSED
        await close(client)
    finally:
        store.close()
        await restarted.stopService()


@pytest_twisted.ensureDeferred
async def test_an_open_connection_keeps_no_http_request_alive(db_url, capsys):
    # Twisted Web's request and channel (about 4 KB) would otherwise live as
    # long as each websocket: see PremiumProtocol._release_http_channel.
    import gc

    from twisted.web.http import HTTPChannel
    from twisted.web.server import Request

    token = add_account(db_url, capsys)
    service, url = await start_server(db_url)
    def http_objects():
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, (Request, HTTPChannel))}

    try:
        before = http_objects()  # earlier tests' leftovers are not ours
        clients = [await connect(url + "?" + token) for _ in range(3)]
        for client in clients:
            await client.wait_for(lambda m: m["message"] == messages.WELCOME)
        assert http_objects() - before == set()
        for client in clients:
            await close(client)
    finally:
        await service.stopService()

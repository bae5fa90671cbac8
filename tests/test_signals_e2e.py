"""
Signals end to end over real sockets: the plugin's service on the paper
broker, a real database, real websocket clients, treq for the webhook, and a
real local HTTP signal provider.
"""

import json
from decimal import Decimal

import pytest_twisted
import sqlalchemy as sa
import treq
from twisted.logger import formatEvent, globalLogPublisher

from tradebot.broker import BUY, SELL
from tradebot.cli import main as admin
from tradebot.store import schema
from tradebot.store.db import SyncStore
from tradebot.trading import alerts, messages

from .test_e2e import add_account, start_server
from .test_remote import Provider
from .wsclient import connect, message_is

#: A strategy that never signals (bands 1000 deviations wide): every trade
#: in these tests comes from an alert or from the provider.
NEVER = "bollinger_breakout:width=1000"


class LogLines:
    """Every line logged while it is open, formatted."""

    def __init__(self):
        self.lines = []

    def __enter__(self):
        globalLogPublisher.addObserver(self._observe)
        return self

    def __exit__(self, *_):
        globalLogPublisher.removeObserver(self._observe)

    def _observe(self, event):
        self.lines.append(formatEvent(event))

    def holding(self, text):
        return [line for line in self.lines if text in line]


def subscribe(db_url, capsys, name="alice"):
    """Subscribe the account to a new webhook; its secret."""
    assert admin(["--db", db_url, "account", "set", name, "--webhook"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "shown once" in out[-2]
    return out[-1]


def alert_rows(db_url):
    store = SyncStore(db_url)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.alerts).order_by(schema.alerts.c.id)).all()
    store.close()
    return rows


async def post(base, path, body):
    response = await treq.post(base + path, data=body if isinstance(body, bytes) else json.dumps(body).encode())
    return response.code, await response.json()


@pytest_twisted.ensureDeferred
async def test_the_webhook_answers_404_400_and_202(db_url, capsys):
    add_account(db_url, capsys, symbols="XAUUSD,EURUSD")
    secret = subscribe(db_url, capsys)
    with LogLines() as log:
        service, url = await start_server(db_url, "0.3", "0.1", "--strategy", NEVER)
        base = url.replace("ws://", "http://").replace("/ws/check/premium/", "")
        good = {"symbol": "EURUSD", "action": "buy"}
        try:
            # unknown secrets and paths: 404, whatever the body
            for path in ("/webhook/not-the-secret", "/webhook/" + secret[:-1], "/webhook/", "/webhook/" + secret + "/x"):
                assert await post(base, path, good) == (404, {"error": "unknown webhook"}), path
            response = await treq.get(f"{base}/webhook/{secret}")
            assert (response.code, await response.json()) == (405, {"error": "POST an alert"})
            assert response.headers.getRawHeaders("allow") == ["POST"]
            # each kind of bad body: 400, saying what is wrong
            for body, error in (
                (b"buy EURUSD", "the body is not JSON"),
                (b"", "the body is not JSON"),
                (b'["EURUSD", "buy"]', "the body must be a JSON object"),
                (b"\xff", "the body is not UTF-8 text"),
                (b'{"symbol": "EURUSD", "action": "buy", "sl": NaN}', "NaN is not a number"),
                (b"{" * 65537, "the body is larger than 65536 bytes"),  # chunked: counted as it arrives
                ({"action": "buy"}, '"symbol" is missing'),
                ({"symbol": 7, "action": "buy"}, '"symbol" is missing'),
                ({"symbol": "EURUSD"}, '"action" is missing'),
                ({"symbol": "EURUSD", "action": "hold"}, '"action" must be "buy", "sell" or "none", not "hold"'),
                ({"symbol": "EURUSD", "action": "none"}, 'an alert\'s "action" is "buy" or "sell"'),
                ({"symbol": "EURUSD", "action": "buy", "stoploss": 1.05}, 'unknown key "stoploss"'),
                ({"symbol": "EURUSD", "action": "buy", "sl": -1}, '"sl" must be more than 0, not -1'),
                ({"symbol": "EURUSD", "action": "buy", "tp": "abc"}, '"tp" must be a number, not "abc"'),
                ({"symbol": "EURUSD", "action": "buy", "sl_distance": [1]}, '"sl_distance" must be a number'),
                ({"symbol": "EURUSD", "action": "buy", "sl": 1, "sl_distance": 1}, 'give "sl" or "sl_distance", not both'),
                ({"symbol": "GBPUSD", "action": "buy"}, "'GBPUSD' is not traded by this webhook's account (it trades EURUSD, XAUUSD)"),
            ):
                code, answer = await post(base, f"/webhook/{secret}", body)
                if len(body) > 65536:  # refused as it came, before it was read
                    assert (code, answer) == (413, {"error": "the body is larger than this path takes"})
                    continue
                assert (code, answer) == (400, {"error": answer["error"]}), body
                assert error in answer["error"], (body, answer)
            assert alert_rows(db_url) == []  # nothing was queued
            # a good one: 202, queued for the account's next check
            code, answer = await post(
                base, f"/webhook/{secret}", {"symbol": "EURUSD", "action": "Sell", "sl": "1.2", "tp_distance": 0.0015}
            )
            assert code == 202
            assert answer["status"] == "queued" and answer["expires_at"] > 0
            assert {k: answer[k] for k in ("symbol", "action", "accounts")} == {"symbol": "EURUSD", "action": SELL, "accounts": 1}
            [row] = alert_rows(db_url)
            assert (row.symbol, row.side, row.status) == ("EURUSD", SELL, alerts.QUEUED)
            assert (row.stop_price, row.take_distance, row.stop_distance, row.take_price) == (
                Decimal("1.2"), Decimal("0.0015"), None, None
            )
            assert row.expires_at == answer["expires_at"] == row.received_at + 300
        finally:
            await service.stopService()
    # the access log shows the webhook's path, never its secret
    assert log.holding("POST /webhook/*** 202")
    assert log.holding("POST /webhook/*** 404")
    assert not log.holding(secret) and not log.holding(secret[:-1])


@pytest_twisted.ensureDeferred
async def test_an_account_subscribed_to_the_webhook_trades_the_alert_at_its_next_check(db_url, capsys):
    token = add_account(db_url, capsys, symbols="XAUUSD,EURUSD")
    secret = subscribe(db_url, capsys)
    service, url = await start_server(db_url, "0.3", "0.1", "--strategy", NEVER)
    base = url.replace("ws://", "http://").replace("/ws/check/premium/", "")
    try:
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        await client.wait_for(message_is(messages.CHECKING, symbol="EURUSD"))
        since = len(client.received)
        code, _ = await post(base, f"/webhook/{secret}", {"symbol": "XAUUSD", "action": "sell", "sl_distance": 5, "tp_distance": "7.5"})
        assert code == 202
        placed = await client.wait_for(message_is(messages.TRADE_PLACED, symbol="XAUUSD"), since=since)
        assert placed["data"]["symbol"] == "XAUUSD"
        signals = [m for m in client.received if m["message"] in (BUY, SELL)]
        assert signals == [messages.signal(SELL, "XAUUSD")]
        client.sendClose()
        await client.closed
    finally:
        await service.stopService()
    store = SyncStore(db_url)
    [(_, trade)] = store.trades("alice")
    store.close()
    assert trade.side == SELL
    # a SELL's stop above the entry and its take under it: 5 + 7.5 apart
    assert trade.stop_loss - trade.take_profit == Decimal("12.5")
    [row] = alert_rows(db_url)
    assert row.status == alerts.TAKEN


@pytest_twisted.ensureDeferred
async def test_a_server_with_an_http_provider_trades_its_buy(db_url, capsys):
    token = add_account(db_url, capsys, symbols="EURUSD,XAUUSD")
    provider = Provider().start()
    provider.respond = lambda question: (
        (200, b'{"action": "buy", "sl_distance": 4, "tp_distance": 6}') if question["symbol"] == "XAUUSD" else (200, b'{"action": "none"}')
    )
    key = "pr0viderKEY"
    strategy = f"http:timeout=2,candles=30,url=http://127.0.0.1:{provider.number}/signal?key={key}"
    with LogLines() as log:
        service, url = await start_server(db_url, "0.3", "0.1", "--strategy", strategy)
        try:
            client = await connect(url + "?" + token)
            client.send({"msg": "ping"})
            placed = await client.wait_for(message_is(messages.TRADE_PLACED, symbol="XAUUSD"))
            at = client.received.index(placed)
            assert client.received[at - 1] == messages.signal(BUY, "XAUUSD")
            client.sendClose()
            await client.closed
        finally:
            await service.stopService()
            await provider.stop()
    questions = {q["symbol"]: q for q in provider.requests}
    assert set(questions) == {"EURUSD", "XAUUSD"}
    assert (questions["XAUUSD"]["digits"], questions["EURUSD"]["digits"]) == (2, 5)
    assert len(questions["XAUUSD"]["candles"]) == 30
    assert set(questions["XAUUSD"]["candles"][0]) == {"time", "open", "high", "low", "close"}
    store = SyncStore(db_url)
    trades = [t for _, t in store.trades("alice")]
    store.close()
    assert trades[0].symbol == "XAUUSD" and trades[0].side == BUY
    assert trades[0].take_profit - trades[0].stop_loss == Decimal("10")
    # the provider's key is never logged; the start-up line shows the URL redacted
    assert not log.holding(key)
    assert log.holding(f"strategy http:timeout=2,candles=30,url=http://127.0.0.1:{provider.number}/signal?***")

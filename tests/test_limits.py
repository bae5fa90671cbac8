"""
Who may connect, and how many: each limit attacked over a real socket, and the
gatekeeper's arithmetic on a Clock. Past a limit the handshake gets 429 (one
address or account asking too much) or 503 (the server full); the connections
already open are not affected. A revoked or rotated token closes its open
connections; no account ever sees another account's messages.
"""

import pytest
import pytest_twisted
import treq
from twisted.internet.task import Clock

from tradebot.cli import main as admin
from tradebot.server.limits import Gatekeeper, Limits, Refused
from tradebot.store.db import SyncStore
from tradebot.trading import messages

from .test_e2e import add_account, start_server
from .wsclient import connect, message_is

UPGRADE = {
    "Upgrade": ["websocket"],
    "Connection": ["Upgrade"],
    "Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQ=="],
    "Sec-WebSocket-Version": ["13"],
}


async def handshake_status(url, token, **headers):
    """The HTTP status a websocket handshake gets (101 when accepted)."""
    all_headers = dict(UPGRADE)
    all_headers.update({k.replace("_", "-"): [v] for k, v in headers.items()})
    response = await treq.get(url.replace("ws://", "http://") + "?" + token, headers=all_headers)
    await response.text() if response.code != 101 else None
    return response.code


async def still_streams(client):
    """The connection answers: a ping gets the stream going (or it already is)."""
    since = len(client.received)
    client.send({"msg": "nonsense"})
    await client.wait_for(message_is(messages.INVALID_MESSAGE), since=since)


@pytest_twisted.ensureDeferred
async def test_an_account_has_a_connection_limit_and_the_others_carry_on(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url, "60", "1", "--max-connections-per-account", "2")
    try:
        first, second = await connect(url + "?" + token), await connect(url + "?" + token)
        assert await handshake_status(url, token) == 429
        await still_streams(first)
        await still_streams(second)
        first.sendClose()
        await first.closed
        third = await connect(url + "?" + token)  # room again
        await still_streams(third)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_one_address_has_a_connection_limit(db_url, capsys):
    alice, bob = add_account(db_url, capsys), add_account(db_url, capsys, name="bob")
    service, url = await start_server(db_url, "60", "1", "--max-connections-per-ip", "2")
    try:
        await connect(url + "?" + alice)
        await connect(url + "?" + bob)
        assert await handshake_status(url, bob) == 429
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_full_server_answers_503(db_url, capsys):
    alice, bob = add_account(db_url, capsys), add_account(db_url, capsys, name="bob")
    service, url = await start_server(db_url, "60", "1", "--max-connections", "1")
    try:
        client = await connect(url + "?" + alice)
        assert await handshake_status(url, bob) == 503
        await still_streams(client)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_handshakes_a_minute_from_one_address_are_limited(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url, "60", "1", "--max-handshakes-per-ip", "3")
    try:
        for _ in range(3):
            client = await connect(url + "?" + token)
            client.sendClose()
            await client.closed
        assert await handshake_status(url, token) == 429
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_an_address_that_keeps_failing_is_locked_out_even_with_a_good_token(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url)
    gate = service.factory.gatekeeper
    try:
        limits = gate.limits
        for attempt in range(limits.lock_after_failures):
            if attempt == limits.slow_after_failures + 1:
                gate.limits = Limits(slow_after_failures=10**6, lock_after_failures=limits.lock_after_failures)
            assert await handshake_status(url, "wrong") == 403
        assert await handshake_status(url, token) == 429
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_forwarded_addresses_count_only_through_a_trusted_proxy(db_url, capsys):
    token = add_account(db_url, capsys)
    trusting, url = await start_server(
        db_url, "60", "1", "--max-connections-per-ip", "1", "--trusted-proxies", "127.0.0.1"
    )
    try:
        await connect(url + "?" + token, headers={"X-Forwarded-For": "203.0.113.7"})
        await connect(url + "?" + token, headers={"X-Forwarded-For": "198.51.100.9, 127.0.0.1"})
        assert await handshake_status(url, token, X_Forwarded_For="203.0.113.7") == 429
    finally:
        await trusting.stopService()
    untrusting, url = await start_server(db_url, "60", "1", "--max-connections-per-ip", "1")
    try:
        await connect(url + "?" + token, headers={"X-Forwarded-For": "203.0.113.7"})
        # a client cannot pose as another address: the header is ignored
        assert await handshake_status(url, token, X_Forwarded_For="192.0.2.1") == 429
    finally:
        await untrusting.stopService()


@pytest_twisted.ensureDeferred
async def test_only_allowed_origins_may_connect_from_a_browser(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url, "60", "1", "--allowed-origins", "https://app.example")
    try:
        assert await handshake_status(url, token, Origin="https://evil.example") == 403
        await connect(url + "?" + token, origin="https://app.example")
        await connect(url + "?" + token)  # the apps send no Origin
    finally:
        await service.stopService()


@pytest.mark.parametrize("action", ["revoke", "rotate-token"])
@pytest_twisted.ensureDeferred
async def test_a_revoked_or_rotated_token_closes_its_connections_at_once(db_url, capsys, action):
    token = add_account(db_url, capsys)
    other = add_account(db_url, capsys, name="bob")
    service, url = await start_server(db_url)
    try:
        client = await connect(url + "?" + token)
        bystander = await connect(url + "?" + other)
        client.send({"msg": "ping"})
        await client.wait_for(message_is(messages.CHECKING))
        assert admin(["--db", db_url, "account", action, "alice"]) == 0
        capsys.readouterr()
        assert await client.closed == 1008
        await still_streams(bystander)
        assert await handshake_status(url, token) == 403
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_no_message_of_one_account_reaches_another(db_url, capsys):
    symbol_sets = ["XAUUSD", "EURUSD", "GBPUSD", "USDJPY", "BTCUSD", "XAUUSD,EURUSD", "GBPUSD,USDJPY", "EURUSD,BTCUSD"]
    tokens = {f"acct{i}": add_account(db_url, capsys, name=f"acct{i}", symbols=s) for i, s in enumerate(symbol_sets)}
    service, url = await start_server(db_url)
    try:
        clients = {}
        for name, token in tokens.items():
            clients[name] = [await connect(url + "?" + token), await connect(url + "?" + token)]
            for client in clients[name]:
                client.send({"msg": "ping"})
        # enough trading that every account has had trades of its own
        for name in tokens:
            await clients[name][0].wait_for(message_is(messages.TRADE_COMPLETED), timeout=90)
    finally:
        await service.stopService()
    store = SyncStore(db_url)
    owner = {t.id: name for name, t in store.trades()}
    store.close()
    for (name, pair), symbols in zip(clients.items(), symbol_sets):
        mine = set(symbols.split(","))
        for client in pair:
            for message in client.received:
                data = message.get("data") or {}
                if "symbol" in data:
                    assert data["symbol"] in mine, (name, message)
                if "trade_id" in data:
                    assert owner[data["trade_id"]] == name, (name, message)
            assert any(m["message"] == messages.TRADE_COMPLETED for m in client.received)


# -- the gatekeeper's arithmetic ------------------------------------------------------


def test_failed_handshakes_are_slowed_then_locked_out_and_forgotten_after_a_minute():
    clock = Clock()
    gate = Gatekeeper(Limits(slow_after_failures=2, lock_after_failures=5, lockout=600), clock)
    delays = [gate.failed("10.0.0.1") for _ in range(4)]
    assert delays == [0, 0, 0.25, 0.5]  # slower each time past two
    gate.before_token("10.0.0.2")  # another address is not affected
    gate.failed("10.0.0.1")  # the fifth: locked out
    with pytest.raises(Refused) as refused:
        gate.before_token("10.0.0.1")
    assert refused.value.status == 429
    clock.advance(601)
    gate.before_token("10.0.0.1")  # the lockout ended
    assert gate.failed("10.0.0.1") == 0  # and the old failures are forgotten


def test_the_client_address_is_taken_from_x_forwarded_for_only_behind_a_trusted_proxy():
    gate = Gatekeeper(Limits(trusted_proxies=("10.0.0.1", "10.0.0.2")), Clock())
    assert gate.client_ip("10.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert gate.client_ip("10.0.0.1", "198.51.100.1, 203.0.113.7, 10.0.0.2") == "203.0.113.7"
    assert gate.client_ip("192.0.2.5", "203.0.113.7") == "192.0.2.5"  # not a proxy of ours
    assert gate.client_ip("10.0.0.1", None) == "10.0.0.1"
    assert gate.client_ip("10.0.0.1", "10.0.0.2") == "10.0.0.1"


def test_counts_follow_connections_opening_and_closing():
    gate = Gatekeeper(Limits(per_account=1, per_ip=2, max_connections=3), Clock())
    gate.opened("a", 1)
    with pytest.raises(Refused):
        gate.check_account(1, "a")
    gate.opened("a", 2)
    with pytest.raises(Refused) as refused:
        gate.before_token("a")
    assert refused.value.status == 429
    gate.opened("b", 3)
    with pytest.raises(Refused) as refused:
        gate.before_token("c")
    assert refused.value.status == 503
    for ip, account in (("a", 1), ("a", 2), ("b", 3)):
        gate.closed(ip, account)
    assert (gate.total, dict(gate.by_ip), dict(gate.by_account)) == (0, {}, {})
    gate.before_token("a")
    gate.check_account(1, "a")


async def fail_until_locked(gate, attempt_fails):
    """Fail `lock_after_failures` times through `attempt_fails` (an async
    callable), with the slow-down switched off after it has shown, so the
    test does not wait out a growing delay."""
    limits = gate.limits
    for attempt in range(limits.lock_after_failures):
        if attempt == limits.slow_after_failures + 1:
            gate.limits = Limits(slow_after_failures=10**6, lock_after_failures=limits.lock_after_failures)
        await attempt_fails()


@pytest.mark.parametrize("surface", ["webhook", "api"])
@pytest_twisted.ensureDeferred
async def test_wrong_secrets_lock_out_wrong_ones_but_never_a_right_secret_or_token(db_url, capsys, surface):
    # an alert sender such as TradingView posts for many customers from a few
    # addresses: one customer's wrong secrets must not shut the others out
    token = add_account(db_url, capsys)
    assert admin(["--db", db_url, "account", "set", "alice", "--webhook"]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1].split()[-1]
    service, url = await start_server(db_url)
    base = url.replace("ws://", "http://").split("/ws/")[0]
    alert = b'{"symbol": "EURUSD", "action": "buy"}'

    async def webhook(path_secret):
        response = await treq.post(f"{base}/webhook/{path_secret}", data=alert)
        await response.content()
        return response.code

    async def api(bearer):
        response = await treq.get(f"{base}/api/trades", headers={"Authorization": [f"Bearer {bearer}"]})
        await response.content()
        return response.code

    async def wrong():
        if surface == "webhook":
            assert await webhook("not-" + secret) == 404
        else:
            assert await api("not-" + token) == 401

    try:
        assert await webhook(secret) == 202 and await api(token) == 200  # the right ones work
        await fail_until_locked(service.factory.gatekeeper, wrong)
        # wrong ones from this address are now refused at once...
        if surface == "webhook":
            assert await webhook("not-" + secret) == 429
        else:
            assert await api("not-" + token) == 429
        # ...the right secret and the right token never are
        assert await webhook(secret) == 202
        assert await api(token) == 200
        # wrong webhook secrets shut nobody out of the websocket; wrong API
        # tokens count as failed handshakes, as before
        if surface == "webhook":
            client = await connect(url + "?" + token)
            client.sendClose()
            await client.closed
        else:
            assert await handshake_status(url, token) == 429
    finally:
        await service.stopService()

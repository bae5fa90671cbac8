"""
Account tokens: random (192 bits), stored only as a SHA-256 hash, and
confirmed in constant time after the lookup by hash, over a real server:
the websocket handshake and ``GET /api/trades``.
"""

import base64

import pytest_twisted
import treq

from tradebot.store.db import SyncStore
from tradebot.store.tokens import hash_token, new_token, token_matches
from tradebot.trading import messages

from .test_cli import db_bytes
from .test_e2e import add_account, close, start_server
from .wsclient import connect

HANDSHAKE = {
    "Upgrade": ["websocket"],
    "Connection": ["Upgrade"],
    "Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQ=="],
    "Sec-WebSocket-Version": ["13"],
}


def test_tokens_carry_192_random_bits():
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))) == 24 for t in tokens)


def test_token_matches_is_exact_and_refuses_a_revoked_token():
    token = new_token()
    assert token_matches(token, hash_token(token))
    assert not token_matches(token[:-1] + ("A" if token[-1] != "A" else "B"), hash_token(token))
    assert not token_matches(token, None)


def one_off(token):
    """Tokens differing from `token` in one character: changed at the start,
    the middle and the end, and one longer."""
    def changed(i):
        return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]

    return [changed(0), changed(len(token) // 2), changed(len(token) - 1), token + "A"]


async def statuses(url, token):
    """(websocket handshake status, GET /api/trades status) for `token`."""
    http = url.replace("ws://", "http://")
    # an accepted handshake (101) would leave this request waiting: the timeout fails it
    handshake = await treq.get(http + "?" + token, headers=HANDSHAKE, timeout=10)
    await handshake.text()
    api = await treq.get(
        http.replace("/ws/check/premium/", "/api/trades"), headers={"Authorization": ["Bearer " + token]}, timeout=10
    )
    await api.text()
    return handshake.code, api.code


@pytest_twisted.ensureDeferred
async def test_the_database_holds_only_the_hash_and_a_token_one_character_off_is_refused(db_url, capsys):
    token = add_account(db_url, capsys)
    stored = db_bytes(db_url)
    assert token.encode() not in stored and hash_token(token).encode() in stored
    service, url = await start_server(db_url)
    try:
        for wrong in one_off(token):
            assert await statuses(url, wrong) == (403, 401), wrong
        client = await connect(url + "?" + token)
        await client.wait_for(lambda m: m["message"] == messages.WELCOME)
        await close(client)
        http = url.replace("ws://", "http://").replace("/ws/check/premium/", "/api/trades")
        response = await treq.get(http, headers={"Authorization": ["Bearer " + token]})
        assert response.code == 200 and (await response.json())["account"]["name"] == "alice"
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_an_account_found_by_a_lookup_is_confirmed_against_the_token(db_url, capsys):
    """The hash lookup is the first check, not the only one: even a lookup
    that finds the wrong row (here, one that answers alice for any hash) lets
    no other token in, since the token is confirmed against the row's hash
    with `token_matches`."""
    token = add_account(db_url, capsys)
    store = SyncStore(db_url)
    alice = store.account_by_name("alice")
    store.close()
    service, url = await start_server(db_url)
    lookup = service.store.account_by_token_hash
    service.store.account_by_token_hash = lambda token_hash: lookup(alice.token_hash)
    try:
        assert await statuses(url, new_token()) == (403, 401)
        assert await statuses(url, one_off(token)[-1]) == (403, 401)
        client = await connect(url + "?" + token)
        await client.wait_for(lambda m: m["message"] == messages.WELCOME)
        await close(client)
    finally:
        await service.stopService()

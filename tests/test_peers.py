"""
Connections that must not linger, on real sockets: a client that vanishes
without a close (it stops reading, so it never answers a websocket ping) is
dropped within ping-interval + ping-timeout and its session slot freed; a
client that never finishes its request (the opening handshake) is dropped
after the handshake timeout, even one that trickles it byte by byte; a client
that breaks the protocol gets its close frame and the end of the TCP
connection at once, without the server waiting for a closing handshake.
"""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tradebot.trading import messages

from .rawws import frame, raw_connect, raw_websocket
from .test_e2e import add_account, start_server
from .test_limits import handshake_status
from .wsclient import connect, message_is

PING_INTERVAL, PING_TIMEOUT = 1.0, 2.0  # Autobahn's timers fire up to 1 s early: a timeout of 2 s lets a pong come
HANDSHAKE_TIMEOUT = 2.0
SLACK = 1.5  # for a loaded machine


def server_side(service, account_name):
    """The server's protocol of the one open connection of `account_name`."""
    [connection] = [c for c in service.factory.connections if c._account is not None and c._account.name == account_name]
    return connection


def when_closed(connection):
    """Deferred: fires with the reactor's time once the server's protocol has
    run its onClose."""
    closed = defer.Deferred()
    original = connection.onClose

    def on_close(wasClean, code, reason):
        original(wasClean, code, reason)
        closed.callback(reactor.seconds())

    connection.onClose = on_close
    return closed


async def still_answers(client):
    since = len(client.received)
    client.send({"msg": "nonsense"})
    await client.wait_for(message_is(messages.INVALID_MESSAGE), since=since, timeout=5)


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_answering_pings_is_dropped_and_its_slot_freed(db_url, capsys):
    token = add_account(db_url, capsys)
    other = add_account(db_url, capsys, name="bob")
    service, url = await start_server(
        db_url, "60", "1", "--ping-interval", str(PING_INTERVAL), "--ping-timeout", str(PING_TIMEOUT),
        "--max-connections-per-account", "1",
    )
    port = service.port.getHost().port
    try:
        honest = await connect(url + "?" + other)  # an Autobahn client: it answers pings
        third_ping = defer.Deferred()
        pings = []

        def on_ping(payload):
            type(honest).onPing(honest, payload)  # the pong
            pings.append(payload)
            if len(pings) == 3:
                third_ping.callback(None)

        honest.onPing = on_ping

        vanishing = await raw_websocket(port, token)
        vanishing.transport.write(frame(0x1, b'{"msg": "ping"}', key=b"\x01\x02\x03\x04"))
        assert (await vanishing.next_answer())["message"] == messages.CHECKING  # it streams
        connection = server_side(service, "alice")
        alice = connection._account.id
        session = service.sessions.get(alice)
        assert session.streaming_count == 1
        assert await handshake_status(url, token) == 429  # alice's one connection is taken

        closed = when_closed(connection)
        vanishing.transport.pauseProducing()  # reads nothing more: no pong, no close, the socket stays open
        gone_quiet = reactor.seconds()
        closed_at = await closed.addTimeout(30, reactor)
        assert closed_at - gone_quiet < PING_INTERVAL + PING_TIMEOUT + SLACK

        # the session let it go, and the account's slot is free
        assert session.streaming_count == 0 and connection not in session._attached
        assert service.factory.gatekeeper.by_account.get(alice, 0) == 0
        assert connection not in service.factory.connections
        idle = not session.live_trades
        assert session.idle == idle
        again = await connect(url + "?" + token)
        await still_answers(again)
        if idle:  # nothing else held it: dropped, and a new one serves the new connection
            assert session.parent is None and service.sessions.get(alice) is not session

        # the server did close the TCP connection: the client sees it once it reads again
        vanishing.transport.resumeProducing()
        await vanishing.ended.addTimeout(10, reactor)

        # the honest client answers its pings, and stays
        await third_ping.addTimeout(10, reactor)
        await still_answers(honest)
    finally:
        await service.stopService()


async def _dropped_after(client):
    """Seconds from connecting until the server dropped `client`."""
    ended = await client.ended.addTimeout(HANDSHAKE_TIMEOUT + 10, reactor)
    return ended - client.connected_at


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_finishes_the_handshake_is_dropped_after_the_timeout(db_url, capsys):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url, "60", "1", "--handshake-timeout", str(HANDSHAKE_TIMEOUT))
    port = service.port.getHost().port
    try:
        prompt = await connect(url + "?" + token)  # its handshake was in time: not affected
        silent = await raw_connect(port, "/ws/check/premium/?" + token, handshake=False)
        trickling = await raw_connect(port, "/ws/check/premium/?" + token, handshake=False)
        request = trickling.handshake_request()[:-2]  # never the blank line that ends it
        sent = iter(range(len(request)))

        def one_byte():  # a byte every 0.2 s: Twisted's idle timeout never fires
            i = next(sent, None)
            if i is not None and trickling.transport.connected:
                trickling.transport.write(request[i:i + 1])

        dribble = task.LoopingCall(one_byte)
        dribble.start(0.2)
        try:
            for client in (silent, trickling):
                took = await _dropped_after(client)
                assert HANDSHAKE_TIMEOUT - 0.1 < took < HANDSHAKE_TIMEOUT + SLACK, took
                assert not client.open.called  # no answer at all, just the end
        finally:
            dribble.stop()
        await still_answers(prompt)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_keep_alive_connection_has_the_same_deadline_for_its_next_request(db_url, capsys):
    service, url = await start_server(db_url, "60", "1", "--handshake-timeout", str(HANDSHAKE_TIMEOUT))
    port = service.port.getHost().port
    try:
        client = await raw_connect(port, "/health", handshake=False)
        client.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answered = defer.Deferred()
        client.dataReceived = lambda data: answered.called or answered.callback(reactor.seconds())
        done = await answered.addTimeout(10, reactor)
        client.transport.write(b"GET /health HTTP/1.1\r\n")  # and no more
        ended = await client.ended.addTimeout(HANDSHAKE_TIMEOUT + 10, reactor)
        assert HANDSHAKE_TIMEOUT - 0.1 < ended - done < HANDSHAKE_TIMEOUT + SLACK
    finally:
        await service.stopService()


FAILURES = [
    ("unmasked", frame(0x1, b'{"msg": "stop"}', mask=False), 1002),
    ("invalid UTF-8", frame(0x1, b'{"msg": "\xff"}'), 1007),
    ("over the size limit", frame(0x1, b"x" * 5000), 1009),
    ("binary", frame(0x2, b"\x00\x01"), 1003),
    ("too many messages", frame(0x1, b"{}") * 30, 1008),
]


@pytest.mark.parametrize("kind, data, code", FAILURES, ids=[kind for kind, _, _ in FAILURES])
@pytest_twisted.ensureDeferred
async def test_a_failed_connection_ends_at_once_after_its_close_frame(db_url, capsys, kind, data, code):
    token = add_account(db_url, capsys)
    service, url = await start_server(db_url, "60", "1")  # the server waits 5 s for a closing handshake
    port = service.port.getHost().port
    try:
        client = await raw_websocket(port, token)  # it never sends a close frame back
        client.transport.write(data)
        answer = await client.next_answer()
        while isinstance(answer, dict):  # the answers to the messages before the 21st
            assert kind == "too many messages"
            answer = await client.next_answer()
        assert answer == ("close", code)
        assert await client.next_answer(timeout=2) == ("lost", None)
    finally:
        await service.stopService()

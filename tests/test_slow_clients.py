"""
A client that stops reading: the server holds its messages back instead of
growing its write buffer, keeps only the newest of a superseded kind (an open
trade's report, a symbol's "checking"), never drops a signal, a placement or a
completion, and closes the client (1008) if it stays behind too long or falls
too far behind. Driven through the transport's producer callbacks on a Clock.
"""

import base64
import json
import os
import socket
from decimal import Decimal

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.task import Clock

from tradebot.loops import supersede_key
from tradebot.protocol import CLOSE_POLICY_VIOLATION
from tradebot.server.websocket import PremiumFactory
from tradebot.trading import messages

from .test_e2e import add_account, start_server


class Connection:
    """A PremiumProtocol that is open, with what it writes and how it closes recorded."""

    def __init__(self, slow_client_timeout=60.0, max_waiting=1000):
        self.clock = Clock()
        factory = PremiumFactory(None, None, self.clock, slow_client_timeout=slow_client_timeout, max_waiting=max_waiting)
        self.protocol = protocol = factory.buildProtocol(None)
        protocol.state = protocol.STATE_OPEN
        self.written, self.closed = [], []
        protocol.sendPreparedMessage = self.written.append
        protocol.close_with = lambda code, reason: self.closed.append((code, reason))

    def send(self, message):
        self.protocol.send_frame(message["message"] + " " + str(message.get("data")), supersede_key(message))


def report(price):
    return messages.active_trade(7, "XAUUSD", "BUY", Decimal(1), Decimal(3), Decimal(2), Decimal("0.1"), Decimal(price), Decimal(0))


def test_a_reading_client_gets_every_message_at_once():
    c = Connection()
    c.send(messages.checking("XAUUSD"))
    c.send(report("2"))
    assert len(c.written) == 2


def test_a_client_behind_gets_the_newest_report_and_every_signal_placement_and_completion():
    c = Connection()
    c.protocol.pauseProducing()  # its buffer is full
    c.send(report("2.1"))
    c.send(messages.checking("EURUSD"))
    c.send(messages.signal("BUY", "EURUSD"))
    c.send(messages.trade_placed("EURUSD"))
    c.send(report("2.2"))
    c.send(messages.checking("EURUSD"))
    c.send(report("2.3"))
    completed = messages.trade_completed(7, "XAUUSD", "profit", 1, 2, Decimal("0.1"), Decimal(1), Decimal(3), Decimal(10), Decimal(1), Decimal(3))
    c.send(completed)
    assert c.written == []
    c.protocol.resumeProducing()
    texts = [w.split(" ", 1)[0] for w in c.written]
    assert texts == ["BUY", "A", "checking", "active", "Trade"]  # signal, placed, newest checking, newest report, completion
    assert "2.3" in c.written[3]
    assert c.closed == []


def test_a_client_behind_for_too_long_is_closed():
    c = Connection(slow_client_timeout=30)
    c.protocol.pauseProducing()
    c.send(messages.signal("SELL", "XAUUSD"))
    c.clock.advance(29)
    assert c.closed == []
    c.clock.advance(1)
    assert c.closed == [(CLOSE_POLICY_VIOLATION, "too slow")]


def test_a_client_that_catches_up_in_time_stays():
    c = Connection(slow_client_timeout=30)
    c.protocol.pauseProducing()
    c.clock.advance(20)
    c.protocol.resumeProducing()
    c.clock.advance(60)
    assert c.closed == []


def test_a_client_too_far_behind_is_closed_and_what_waited_is_let_go():
    c = Connection(max_waiting=6)  # five signals and one report fit
    c.protocol.pauseProducing()
    for i in range(5):
        c.send(messages.signal("BUY", f"S{i}"))
    assert c.closed == []
    for i in range(100):  # superseded kinds never pile up
        c.send(report(str(i)))
    assert c.closed == []
    c.send(messages.signal("BUY", "S6"))
    assert c.closed == [(CLOSE_POLICY_VIOLATION, "too slow")]
    assert not c.protocol._waiting


def test_a_frame_nested_deeper_than_the_json_decoder_goes_is_an_invalid_message():
    from tradebot.protocol import parse_command

    assert parse_command(b"[" * 2000 + b"]" * 2000) == (None, "JSON nested too deeply")
    assert parse_command(b'{"msg": "ping"}') == ("ping", None)


# -- over a real socket ----------------------------------------------------------


def _raw_streaming_client(port, token):
    """A blocking socket with a small receive buffer that completes the
    handshake, starts streaming, and from then on is never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connecting: the window stays small
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/check/premium/?{token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    payload, mask = json.dumps({"msg": "ping"}).encode(), os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_a_real_socket_is_held_back_then_closed(db_url, capsys):
    token = add_account(db_url, capsys)
    service, _ = await start_server(
        db_url, "0.05", "0.05", "--slow-client-timeout", "1", "--max-waiting-messages", "1000000"
    )
    sock = None
    try:
        port = service.port.getHost().port
        sock = await threads.deferToThread(_raw_streaming_client, port, token)
        (connection,) = service.factory.connections
        # the kernel's buffers then hold a few KB, not megabytes, so the
        # server's own buffer fills within seconds
        connection.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        closed = connection.when_closed()
        await closed.addTimeout(30, reactor)
        assert connection.transport.producer is None  # unregistered once closed
        assert (connection.localCloseCode, connection.localCloseReason) == (CLOSE_POLICY_VIOLATION, b"too slow")
        assert not service.factory.connections
    finally:
        if sock is not None:
            sock.close()
        await service.stopService()


def test_a_frame_counts_as_written_only_once_it_is_written_and_never_if_dropped():
    c = Connection(max_waiting=3)
    done = []
    c.protocol.send_frame("now", None, lambda: done.append("now"))
    assert done == ["now"]
    c.protocol.pauseProducing()
    c.protocol.send_frame("held", None, lambda: done.append("held"))
    assert done == ["now"]  # waiting, not written
    c.protocol.resumeProducing()
    assert done == ["now", "held"]
    c.protocol.pauseProducing()
    for n in range(4):  # one too many: closed, and what waited is dropped
        c.protocol.send_frame(f"lost {n}", None, lambda n=n: done.append(n))
    assert c.closed and done == ["now", "held"]

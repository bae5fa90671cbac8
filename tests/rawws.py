"""
A websocket client that speaks raw bytes, for tests that must send what no
library would: frames built by hand (`frame`), a handshake left unfinished, a
peer that stops reading.

`RawClient` puts what the server sends on `answers`, in order: a text message
as its decoded JSON, ``("pong", payload)``, ``("close", code)`` (code None for
a close frame without one) and, once the TCP connection ends, ``("lost", None)``.
It answers the server's pings unless told not to, as a browser would.
"""

import base64
import json
import struct

from twisted.internet import defer, protocol, reactor

from tradebot.trading import messages


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None, key=b"\x00\x00\x00\x00", width=None):
    """One client frame. `key` is the masking key; `length` may lie about the
    payload's size; `width` (7, 16 or 64 bits) forces a length encoding,
    minimal or not."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload) if length is None else length
    if width is None:
        width = 7 if size < 126 else 16 if size < 1 << 16 else 64
    masked = 0x80 if mask else 0
    if width == 7:
        header = struct.pack("!BB", first, masked | size)
    elif width == 16:
        header = struct.pack("!BBH", first, masked | 126, size)
    else:
        header = struct.pack("!BBQ", first, masked | 127, size)
    if not mask:
        return header + payload
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def unmasked_payload(data: bytes) -> bytes:
    """The payload of one masked client `frame` (at most 80 bytes of it),
    for failure messages."""
    size = data[1] & 0x7F
    offset = 2 + (2 if size == 126 else 8 if size == 127 else 0)
    if not data[1] & 0x80:
        return data[offset:offset + 80]
    key = data[offset:offset + 4]
    return bytes(b ^ key[i % 4] for i, b in enumerate(data[offset + 4:offset + 84]))


class HandshakeRefused(Exception):
    """The server answered the opening handshake with something else than 101."""


class RawClient(protocol.Protocol):
    """One raw websocket connection (see the module's docstring)."""

    def __init__(self, path_and_query, answer_pings=True, handshake=True):
        self.path = path_and_query
        self.answer_pings = answer_pings
        self.send_handshake = handshake
        self.buffer = b""
        self.connected_at = None
        self.open = defer.Deferred()
        self.answers = defer.DeferredQueue()
        self.ended = defer.Deferred()
        self.handshaken = False

    def connectionMade(self):
        self.connected_at = reactor.seconds()
        if self.send_handshake:
            self.transport.write(self.handshake_request())

    def handshake_request(self) -> bytes:
        """The client's opening handshake (RFC 6455 4.1)."""
        key = base64.b64encode(b"0123456789abcdef").decode()
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def dataReceived(self, data):
        self.buffer += data
        if not self.handshaken:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.open.errback(HandshakeRefused(head.split(b"\r\n", 1)[0].decode("latin-1")))
                self.transport.loseConnection()
                return
            self.handshaken, self.buffer = True, rest
            self.open.callback(self)
        while len(self.buffer) >= 2:
            opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            offset = 2
            if size == 126:
                if len(self.buffer) < 4:
                    return
                size, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif size == 127:
                if len(self.buffer) < 10:
                    return
                size, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < offset + size:
                return
            payload, self.buffer = self.buffer[offset:offset + size], self.buffer[offset + size:]
            if opcode == 0x1:
                self.answers.put(json.loads(payload))
            elif opcode == 0x8:
                self.answers.put(("close", struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None))
            elif opcode == 0x9 and self.answer_pings:
                self.transport.write(frame(0xA, payload))
            elif opcode == 0xA:
                self.answers.put(("pong", payload))

    def connectionLost(self, reason):
        if self.send_handshake and not self.open.called:
            self.open.errback(HandshakeRefused("connection closed during the handshake"))
        self.answers.put(("lost", None))
        self.ended.callback(reactor.seconds())

    def next_answer(self, timeout=10):
        """Deferred: the next thing the server sent; fails after `timeout` s."""
        return self.answers.get().addTimeout(timeout, reactor)


async def raw_connect(port, path_and_query, **options) -> RawClient:
    """A `RawClient` on 127.0.0.1:`port`, once connected (not yet handshaken)."""
    client = RawClient(path_and_query, **options)
    await protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
    return client


async def raw_websocket(port, token, timeout=10, **options) -> RawClient:
    """A `RawClient` of the account with `token`, open, its welcome (message 1)
    taken off its answers."""
    client = await raw_connect(port, f"/ws/check/premium/?{token}", **options)
    await client.open.addTimeout(timeout, reactor)
    welcome = await client.next_answer(timeout)
    assert isinstance(welcome, dict) and welcome.get("message") == messages.WELCOME, welcome
    return client

"""
WORK IN PROGRESS (not collected: rename to test_fuzz.py when done). Known open
points: a run is slow (after some fatal frames the server waits out its 5 s
closing handshake before the TCP connection ends), and one run in a few saw a
bad text frame get neither an answer nor a close within 10 s (not yet
understood: find the frame from the failure message, which shows the last three
frames unmasked).

Thousands of random and malformed frames at a running server from several raw
connections (frames built by hand: invalid UTF-8, huge lengths, stray and
interleaved fragments, bad control frames, reserved bits, unmasked frames,
binary data, invalid JSON, wrong types, unknown commands, deeply nested JSON).
The server stays up; every bad frame gets an ``invalid message`` answer or a
close; and a well-behaved client on the same server keeps its stream without a
gap.
"""

import base64
import json
import os
import random
import struct

import pytest_twisted
from twisted.internet import defer, protocol, reactor

from tradebot import messages

from .test_e2e import add_account, start_server
from .wsclient import connect, message_is

SEED = int(os.environ.get("TRADEBOT_FUZZ_SEED", "20261128"))
FRAMES = int(os.environ.get("TRADEBOT_FUZZ_FRAMES", "3000"))
CONNECTIONS = 4


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """One client frame, built by hand (`length` may lie about the payload)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload) if length is None else length
    if size < 126:
        header = struct.pack("!BB", first, (0x80 if mask else 0) | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, size)
    else:
        header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(obj):
    return frame(0x1, json.dumps(obj).encode())


def bad_text_frames(rng):
    """Frames that are valid websocket text but not a valid command: each must
    get one ``invalid message`` answer."""
    choices = [
        lambda: frame(0x1, b"not json"),
        lambda: frame(0x1, b"{"),
        lambda: text([]),
        lambda: text("ping"),
        lambda: text(None),
        lambda: text(rng.randint(-10**9, 10**9)),
        lambda: text({"msg": rng.choice([1, 2.5, None, [], {}, True])}),
        lambda: text({"msg": rng.choice(["PING", "start", "pong", "", "stop ", "p\u00efng"])}),
        lambda: text({"message": "ping"}),
        lambda: frame(0x1, ("[" * rng.randint(500, 2000) + "]" * 2000).encode()[:4000]),
        lambda: frame(0x1, b'{"msg": ' + b"[" * 1500 + b"]" * 1500 + b"}"),
        lambda: frame(0x1, bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 300)))),
        # a valid message split in fragments, but not a valid command
        lambda: frame(0x1, b'{"ms', fin=False) + frame(0x0, b'g": "po', fin=False) + frame(0x0, b'ng"}'),
    ]
    return rng.choice(choices)()


def fatal_frames(rng):
    """Frames that break the websocket protocol or a limit: each must close
    the connection."""
    choices = [
        lambda: frame(0x1, b"\xff\xfe\xc0\xaf" + bytes(rng.randrange(128, 256) for _ in range(8))),  # invalid UTF-8
        lambda: frame(0x2, os.urandom(rng.randint(1, 64))),  # binary
        lambda: frame(0x1, b"x" * 5000),  # over the size limit
        lambda: frame(0x1, b"x", length=2**62),  # a huge announced length
        lambda: frame(0x0, b"stray continuation"),
        lambda: frame(0x1, b'{"msg"', fin=False) + frame(0x1, b"a new message inside"),
        lambda: frame(0x9, b"p" * 126),  # a control frame over 125 bytes
        lambda: frame(0x9, b"ping", fin=False),  # a fragmented control frame
        lambda: frame(rng.choice([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF]), b"x"),  # reserved opcode
        lambda: frame(0x1, b'{"msg": "stop"}', rsv=rng.randint(1, 7)),  # reserved bits
        lambda: frame(0x1, b'{"msg": "stop"}', mask=False),  # clients must mask
        lambda: frame(0x8, b"\x03\xe7"),  # close with an invalid code (999)
        lambda: os.urandom(rng.randint(2, 40)),  # noise
    ]
    return rng.choice(choices)()


class RawClient(protocol.Protocol):
    """A websocket client speaking raw bytes: the handshake, then frames sent
    as given; it tells text answers and the connection's end apart."""

    def __init__(self, path_and_query):
        self.path = path_and_query
        self.buffer = b""
        self.open = defer.Deferred()
        self.answers = defer.DeferredQueue()
        self.ended = defer.Deferred()
        self.handshaken = False
        self.history = []

    def connectionMade(self):
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def dataReceived(self, data):
        self.buffer += data
        if not self.handshaken:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            assert head.startswith(b"HTTP/1.1 101"), head
            self.handshaken, self.buffer = True, rest
            self.open.callback(self)
        while len(self.buffer) >= 2:
            opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            offset = 2
            if size == 126:
                size, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif size == 127:
                size, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < offset + size:
                return
            payload, self.buffer = self.buffer[offset:offset + size], self.buffer[offset + size:]
            if opcode == 0x1:
                self.answers.put(json.loads(payload))
            elif opcode == 0x8:
                self.answers.put(("close", struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None))

    def connectionLost(self, reason):
        self.answers.put(("lost", None))
        self.ended.callback(None)


async def raw_connection(port, token):
    client = RawClient(f"/ws/check/premium/?{token}")
    await protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
    await client.open
    welcome = await client.answers.get()
    assert welcome["message"] == messages.WELCOME
    return client


async def _next(client, sent, timeout=10):
    """The client's next answer; fails, naming the frame, if none comes."""
    client.history.append(sent)
    try:
        return await client.answers.get().addTimeout(timeout, reactor)
    except defer.TimeoutError:
        raise AssertionError(f"no answer and no close within {timeout} s after {[_unmask(f) for f in client.history[-3:]]!r}")


def _unmask(data):
    try:
        size = data[1] & 0x7F
        offset = 2 + (2 if size == 126 else 8 if size == 127 else 0)
        key = data[offset:offset + 4]
        return bytes(b ^ key[i % 4] for i, b in enumerate(data[offset + 4:offset + 4 + 80]))
    except Exception:
        return data[:40]


async def attack(port, token, rng, count, tally):
    client = await raw_connection(port, token)
    for _ in range(count):
        if rng.random() < 0.8:
            data = bad_text_frames(rng)
            client.transport.write(data)
            answer = await _next(client, data)
            assert isinstance(answer, dict) and answer["message"] == messages.INVALID_MESSAGE, answer
            tally["answered"] += 1
        else:
            data = fatal_frames(rng)
            client.transport.write(data)
            while True:  # the server's close frame, then the end of the connection
                answer = await _next(client, data)
                assert not isinstance(answer, dict), answer  # no answer to a fatal frame
                if answer[0] == "lost":
                    break
                tally["close codes"].add(answer[1])
            tally["closed"] += 1
            client = await raw_connection(port, token)
    client.transport.loseConnection()
    await client.ended


@pytest_twisted.ensureDeferred
async def test_malformed_frames_get_an_error_or_a_close_and_a_good_client_sees_no_gap(db_url, capsys):
    attacker = add_account(db_url, capsys, name="mallory")
    good = add_account(db_url, capsys, name="alice")
    service, url = await start_server(
        db_url, "0.2", "0.1", "--max-handshakes-per-ip", "100000", "--message-rate", "100000",
        "--message-burst", "100000",
    )
    port = service.port.getHost().port
    try:
        client = await connect(url + "?" + good)
        arrivals = []
        original = client.onMessage
        client.onMessage = lambda payload, binary: (arrivals.append(reactor.seconds()), original(payload, binary))
        client.send({"msg": "ping"})
        await client.wait_for(message_is(messages.CHECKING))
        rng = random.Random(SEED)
        tally = {"answered": 0, "closed": 0, "close codes": set()}
        started = len(arrivals)
        await defer.gatherResults(
            [
                defer.ensureDeferred(attack(port, attacker, random.Random(rng.random()), FRAMES // CONNECTIONS, tally))
                for _ in range(CONNECTIONS)
            ]
        )
        gaps = [b - a for a, b in zip(arrivals[started:], arrivals[started + 1:])]
        assert tally["answered"] + tally["closed"] == FRAMES // CONNECTIONS * CONNECTIONS
        assert tally["closed"] > 0 and tally["answered"] > 0
        assert tally["close codes"] <= {1002, 1003, 1007, 1009, None}, tally
        assert gaps and max(gaps) < 1.0, max(gaps)
        # the server is up and the good client still streams
        since = len(client.received)
        await client.wait_for(message_is(messages.CHECKING), since=since)
        print(f"fuzz: {tally['answered']} answered, {tally['closed']} closed with {sorted(map(str, tally['close codes']))}")
    finally:
        await service.stopService()

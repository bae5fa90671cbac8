"""
A real websocket client for the end-to-end tests, and a server fixture helper.

`connect(url)` opens a connection over TCP and fires with the client protocol,
which keeps every message and lets a test wait for the one it expects
(`wait_for`), so no test sleeps.
"""

import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor


class Client(WebSocketClientProtocol):
    """Keeps received messages; `wait_for(predicate)` fires on the first
    message (past or future) that matches."""

    def __init__(self):
        super().__init__()
        self.received = []
        self._waiters = []
        self.closed = defer.Deferred()
        self.close_code = None

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        message = json.loads(payload)
        self.received.append(message)
        for waiter in list(self._waiters):
            predicate, d, start = waiter
            if predicate(message):
                self._waiters.remove(waiter)
                d.callback(message)

    def onClose(self, wasClean, code, reason):
        self.close_code = code
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        for _, d, _ in self._waiters:
            d.errback(ConnectionError(f"closed ({code}) while waiting"))
        self._waiters = []
        self.closed.callback(code)

    def send(self, obj):
        self.sendMessage(json.dumps(obj).encode())

    def wait_for(self, predicate, timeout=30, since=0):
        """Deferred[dict]: the first message from index `since` on that
        matches; fails after `timeout` seconds."""
        for message in self.received[since:]:
            if predicate(message):
                return defer.succeed(message)
        d = defer.Deferred()
        self._waiters.append((predicate, d, since))
        d.addTimeout(timeout, reactor)
        return d


def connect(url, headers=None, origin=None):
    """Deferred[Client]: an open connection to `url`, sending `headers` (a
    dict) and `origin` in the handshake if given."""
    factory = WebSocketClientFactory(url, headers=headers, origin=origin)
    factory.protocol = Client
    factory.opened = defer.Deferred()
    connectWS(factory)
    return factory.opened


def message_is(text, **data):
    """A predicate: a message with this text whose data has these values."""

    def predicate(message):
        if message.get("message") != text:
            return False
        return all(message.get("data", {}).get(k) == v for k, v in data.items())

    return predicate

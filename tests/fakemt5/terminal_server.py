"""
Serves a `FakeTerminal` to the fake ``MetaTrader5`` module of other processes
(see ``MetaTrader5.py`` here), one JSON line per call, on the test's reactor.

`TerminalServer.hold()` stops answering (every call, or calls to the functions
named), as a terminal stuck in an IPC call does, until `release()`; the held
calls are then answered in order. `next_call(name)` and `idle()` let a test
wait for a call, or for every process using the terminal to be gone.
"""

import json

import numpy as np
from twisted.internet import defer, protocol
from twisted.protocols.basic import LineOnlyReceiver


def encode(value):
    """A result as JSON values the fake module turns back into structs,
    tuples and record arrays."""
    if hasattr(value, "_asdict"):
        return {"__struct__": type(value).__name__, "fields": {k: encode(v) for k, v in value._asdict().items()}}
    if isinstance(value, np.ndarray):
        return {"__records__": {"descr": value.dtype.descr, "rows": value.tolist()}}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(value):
    """Arguments as the caller passed them, numpy scalars included."""
    if isinstance(value, dict):
        if "__numpy__" in value:
            return getattr(np, value["__numpy__"])(value["value"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


class _TerminalPipe(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 24

    def connectionMade(self):
        self.factory.pipes.add(self)

    def connectionLost(self, reason=None):
        self.factory.pipes.discard(self)
        if not self.factory.pipes:
            waiters, self.factory.idle_waiters = self.factory.idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def lineReceived(self, line):
        request = json.loads(line)
        self.factory.calls.append(request["name"])
        for waiter in self.factory.waiters.pop(request["name"], []):
            waiter.callback(None)
        gate = self.factory.gate
        held = self.factory.held
        if gate is None or (held and request["name"] not in held):
            self._answer(request)
        else:
            gate.addCallback(lambda _: self._answer(request))

    initialized = False

    def _answer(self, request):
        terminal = self.factory.terminal
        if not self.initialized and request["name"] not in ("initialize", "last_error"):
            # the IPC link belongs to the process that made it: a new one must initialize
            answer = {"value": None, "last_error": [-10004, "No IPC connection"]}
            if request["name"] in ("login", "symbol_select"):
                answer["value"] = False
            if self.transport.connected:
                self.sendLine(json.dumps(answer).encode())
            return
        try:
            value = getattr(terminal, request["name"])(*decode(request["args"]), **decode(request["kwargs"]))
            answer = {"value": encode(value)}
        except TypeError as e:
            answer = {"raised": str(e)}
        answer["last_error"] = list(terminal.last_error())
        if request["name"] == "initialize" and answer.get("value"):
            self.initialized = True
        if self.transport.connected:
            self.sendLine(json.dumps(answer).encode())


class TerminalServer(protocol.ServerFactory):
    """The factory serving `terminal`; ``calls`` lists the API calls received."""

    protocol = _TerminalPipe

    def __init__(self, terminal):
        self.terminal = terminal
        self.calls = []
        self.waiters = {}
        self.gate = None
        self.held = ()
        self.pipes = set()  # the modules connected now
        self.idle_waiters = []

    def received(self, name):
        """Deferred that fires once a call to `name` has arrived (at once if
        one has)."""
        if name in self.calls:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self.waiters.setdefault(name, []).append(waiter)
        return waiter

    def next_call(self, name):
        """Deferred that fires when the next call to `name` arrives (calls
        made before are not counted)."""
        waiter = defer.Deferred()
        self.waiters.setdefault(name, []).append(waiter)
        return waiter

    def idle(self):
        """Deferred that fires once no module is connected (at once if none
        is): every process that used the terminal has let go of it."""
        if not self.pipes:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self.idle_waiters.append(waiter)
        return waiter

    def hold(self, *names):
        """Answer nothing from now on (or no call to one of `names`), until
        `release`."""
        self.held = names
        if self.gate is None:
            self.gate = defer.Deferred()

    def release(self):
        """Answer the held calls, and every call from now on."""
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.callback(None)

"""
The MT5 broker through its real links: the broker worker process
(``mt5://``) and an rpyc classic server standing in for mt5linux
(``mt5linux://``), each importing the fake ``MetaTrader5`` module, which
reaches a `FakeTerminal` served from this test process.

Nothing here sleeps: tests wait on the backend's availability changes, on
Deferreds, and on the processes' own output.
"""

import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from tradebot.broker import BUY, BrokerUnavailable, OrderRequest
from tradebot.brokers.mt5.backend import MT5Backend
from tradebot.brokers.mt5.links import LinkFailed, RpycLink, WorkerLink

from .broker_contract import stops_around
from .fakemt5.fake_terminal import FakeTerminal
from .fakemt5.terminal_server import TerminalServer

FAKE_MODULE_DIR = Path(__file__).parent / "fakemt5"
REPO = Path(__file__).parent.parent
PATH = "C:\\Program Files\\MetaTrader 5\\terminal64.exe"


def fake_environment(address: str) -> dict:
    """The environment of a process that imports the fake MetaTrader5 module
    and finds the test's terminal at `address`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE_MODULE_DIR), str(REPO), env.get("PYTHONPATH", "")])
    env["FAKE_MT5_TERMINAL"] = address
    return env


class Terminal:
    """A FakeTerminal served on 127.0.0.1, its clock starting at the real time
    (the broker measures its server-time offset against the real clock);
    tests move its market by hand."""

    def __init__(self, **options):
        self.fake = FakeTerminal(commission_per_lot=0.0, start=time.time(), **options)
        self.server = TerminalServer(self.fake)
        self.port = reactor.listenTCP(0, self.server, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"

    def stop(self):
        self.server.release()
        return self.port.stopListening()


def availability(backend, wanted: bool, timeout=30):
    """Deferred that fires when `backend.available` becomes `wanted`."""
    if backend.available == wanted:
        return defer.succeed(None)
    d = defer.Deferred()

    def changed(available, reason):
        if available == wanted and not d.called:
            backend.unwatch(changed)
            d.callback(reason)

    backend.watch(changed)
    return d.addTimeout(timeout, reactor)


async def order(broker, comment, symbol="EURUSD"):
    spec = await broker.symbol(symbol)
    tick = await broker.tick(symbol)
    sl, tp = stops_around(spec, tick, BUY, 300, 300)
    return OrderRequest(symbol, BUY, Decimal("0.10"), sl, tp, comment)


@pytest.fixture
def terminal():
    terminal = Terminal()
    yield terminal
    pytest_twisted.blockon(terminal.stop())


async def worker_backend(terminal, call_timeout=30.0, env=None):
    link = WorkerLink(reactor, env=env or fake_environment(terminal.address), call_timeout=call_timeout)
    backend = MT5Backend(link, reactor, url="mt5://test", path=PATH, heartbeat=0.5, max_backoff=0.5)
    backend.start()
    await backend.first_attempt
    return backend, link


@pytest_twisted.ensureDeferred
async def test_a_whole_trade_through_the_worker_process(terminal):
    backend, link = await worker_backend(terminal)
    try:
        assert backend.available and link.pid is not None and link.pid != os.getpid()
        broker = backend.broker_for("7", Decimal(0))
        assert await broker.balance() == Decimal("10000")
        candles = await broker.candles("EURUSD", 30)
        assert len(candles) == 30
        position = await broker.open_position(await order(broker, "tb-70"))
        assert position.comment == "tb-70"
        raw = terminal.fake.positions_get()[0]
        assert (raw.magic, raw.identifier) == (backend.magic + 7, position.ticket)
        terminal.fake.set_price("EURUSD", float(position.take_profit) + 0.0005)
        assert await broker.position(position.ticket) is None
        closed = await broker.closed_position(position.ticket)
        assert (closed.reason, closed.close_price) == ("tp", position.take_profit)
        assert await broker.balance() == Decimal("10000") + closed.profit
        # each call went through the worker: the terminal heard them all
        assert terminal.server.calls.count("order_send") == 1
    finally:
        await backend.stop()
    assert link.pid is None


@pytest_twisted.ensureDeferred
async def test_a_hung_worker_is_killed_and_replaced_and_the_reactor_never_waits(terminal):
    backend, link = await worker_backend(terminal, call_timeout=1.0)
    try:
        first_pid = link.pid
        terminal.server.hold()  # the terminal stops answering, as in an IPC hang
        ticks = []
        beat = reactor.callLater  # the reactor keeps turning while the worker hangs

        def tick():
            ticks.append(reactor.seconds())
            if len(ticks) < 100:
                beat(0.02, tick)

        tick()
        with pytest.raises(LinkFailed, match="no answer from the terminal within 1 s"):
            await broker_balance(backend)
        assert not backend.available
        assert max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5
        terminal.server.release()
        await availability(backend, True)
        assert link.pid not in (None, first_pid) and link.generation >= 2
        assert await backend.broker_for("1", Decimal(0)).balance() == Decimal("10000")
    finally:
        await backend.stop()


def broker_balance(backend):
    return backend.broker_for("1", Decimal(0)).balance()


@pytest_twisted.ensureDeferred
async def test_a_worker_killed_mid_call_fails_that_call_and_the_next_worker_carries_on(terminal):
    backend, link = await worker_backend(terminal)
    try:
        broker = backend.broker_for("1", Decimal(0))
        request = await order(broker, "tb-9")
        terminal.server.hold("order_send")
        pending = broker.open_position(request)
        await wait_for_call(terminal.server, "order_send")
        os.kill(link.pid, signal.SIGKILL)
        terminal.server.release()  # the order reaches the terminal after all
        with pytest.raises(BrokerUnavailable):
            await pending
        await availability(backend, True)
        terminal.fake.advance(1)  # the market moves on: its next tick tells the server's clock
        # the order was never resent; its position is found by its comment
        found = await broker.find_by_comment("tb-9")
        assert found is not None and found.comment == "tb-9"
        assert terminal.server.calls.count("order_send") == 1
        assert len(terminal.fake.positions_get()) == 1
    finally:
        await backend.stop()


def wait_for_call(server, name, timeout=30):
    """Deferred that fires once the terminal has received a call `name`."""
    return server.received(name).addTimeout(timeout, reactor)


def wait_until(condition, timeout=30):
    """Deferred that fires once `condition()` holds: for state that no event
    announces (a worker's generation), looked at every 10 ms."""
    d = defer.Deferred()

    def look():
        if condition():
            d.callback(None)
        elif not d.called:
            reactor.callLater(0.01, look)

    look()
    return d.addTimeout(timeout, reactor)


@pytest_twisted.ensureDeferred
async def test_a_worker_without_the_module_says_so_and_the_server_carries_on(terminal, logged_errors):
    env = fake_environment(terminal.address)
    env["PYTHONPATH"] = str(REPO)  # no MetaTrader5 module to import
    backend, link = await worker_backend(terminal, env=env)
    try:
        assert not backend.available
        assert "cannot import MetaTrader5" in backend.down_reason
    finally:
        await backend.stop()


class _Output(protocol.ProcessProtocol):
    def __init__(self):
        self.first_line = defer.Deferred()
        self.ended = defer.Deferred()
        self._buffer = b""

    def outReceived(self, data):
        self._buffer += data
        if b"\n" in self._buffer and not self.first_line.called:
            self.first_line.callback(self._buffer.split(b"\n")[0].decode())

    def processEnded(self, reason):
        self.ended.callback(None)


RPYC_SERVER = """
import sys
from rpyc.core.service import ClassicService
from rpyc.utils.server import ThreadedServer
server = ThreadedServer(ClassicService, hostname="127.0.0.1", port=0, protocol_config={"allow_all_attrs": True})
print(server.port, flush=True)
server.start()
"""


@pytest.fixture
def bridge(terminal):
    """An rpyc classic server, as mt5linux runs next to the terminal, whose
    ``import MetaTrader5`` finds the fake."""
    output = _Output()
    process = reactor.spawnProcess(
        output, sys.executable, [sys.executable, "-c", RPYC_SERVER], env=fake_environment(terminal.address)
    )
    port = int(pytest_twisted.blockon(output.first_line.addTimeout(30, reactor)))
    yield port
    process.signalProcess("KILL")
    pytest_twisted.blockon(output.ended)


@pytest_twisted.ensureDeferred
async def test_a_whole_trade_through_the_mt5linux_bridge(terminal, bridge):
    link = RpycLink(reactor, "127.0.0.1", bridge, call_timeout=10.0)
    backend = MT5Backend(link, reactor, url="mt5linux://test", path=PATH, heartbeat=0.5)
    backend.start()
    await backend.first_attempt
    try:
        assert backend.available
        broker = backend.broker_for("3", Decimal(0))
        position = await broker.open_position(await order(broker, "tb-31", symbol="XAUUSD"))
        terminal.fake.close_by_hand(position.ticket)
        closed = await broker.closed_position(position.ticket)
        assert closed.reason == "manual" and closed.comment == "tb-31"
        assert await broker.balance() == Decimal("10000") + closed.profit
    finally:
        await backend.stop()


@pytest_twisted.ensureDeferred
async def test_a_hung_bridge_call_times_out_and_the_bridge_is_reconnected(terminal, bridge):
    link = RpycLink(reactor, "127.0.0.1", bridge, call_timeout=1.0)
    backend = MT5Backend(link, reactor, url="mt5linux://test", path=PATH, heartbeat=0.5, max_backoff=0.5)
    backend.start()
    await backend.first_attempt
    try:
        terminal.server.hold()
        with pytest.raises(BrokerUnavailable):
            await broker_balance(backend)
        assert not backend.available
        terminal.server.release()
        await availability(backend, True)
        assert await broker_balance(backend) == Decimal("10000")
    finally:
        await backend.stop()


@pytest_twisted.ensureDeferred
async def test_a_worker_that_cannot_start_fails_its_calls_and_the_link_carries_on(logged_errors):
    link = WorkerLink(reactor, python="/nonexistent/python")
    first, second = link.call("terminal_info"), link.call("account_info")
    for call in (first, second):
        with pytest.raises(LinkFailed, match="cannot start"):
            await call
    assert logged_errors.take_errors("worker cannot start") == 2  # each call tried
    link.python = sys.executable
    link.env = fake_environment("127.0.0.1:1")  # nothing listens there: the module says so
    answer = await link.call("terminal_info")
    assert answer == {"id": answer["id"], "value": None, "error": [-10004, "No IPC connection"]}
    await link.stop()


@pytest_twisted.ensureDeferred
async def test_stopping_a_link_whose_worker_hangs_kills_it_and_fails_the_call(terminal):
    link = WorkerLink(reactor, env=fake_environment(terminal.address), call_timeout=60, stop_timeout=0.5)
    await link.call("initialize")
    terminal.server.hold()
    pending = link.call("terminal_info")
    await wait_for_call(terminal.server, "terminal_info")
    await link.stop()
    with pytest.raises(LinkFailed, match="stopped"):
        await pending
    assert link.pid is None


@pytest_twisted.ensureDeferred
async def test_an_ipc_timeout_inside_the_worker_is_a_lost_terminal_not_a_dead_worker(terminal):
    env = fake_environment(terminal.address)
    env["FAKE_MT5_IPC_TIMEOUT"] = "0.5"  # the module gives up before the link does
    backend, link = await worker_backend(terminal, call_timeout=30.0, env=env)
    try:
        pid = link.pid
        terminal.server.hold()
        with pytest.raises(BrokerUnavailable, match="IPC timeout"):
            await broker_balance(backend)
        assert not backend.available and link.pid == pid  # the worker answered: not killed
        terminal.server.release()
        await availability(backend, True)
        assert link.pid == pid and await broker_balance(backend) == Decimal("10000")
    finally:
        await backend.stop()

"""
How the server reaches a MetaTrader5 module: a *link* makes one API call at a
time and answers it with a Deferred of `tradebot.brokers.mt5.wire`'s builtin answer.

- `WorkerLink` (``mt5://``): the native module in a broker worker process,
  over its stdin and stdout; a call that takes too long kills the worker, and
  the next call starts a new one.
- `RpycLink` (``mt5linux://``): the mt5linux bridge to a terminal under Wine,
  over rpyc from one dedicated thread (its socket calls release the GIL).
- `DirectLink`: a module in this process, for tests with a fake terminal. Never
  for the native module: it would freeze the reactor for the length of a call.

A call whose answer never comes fails with `LinkFailed`; whether it did
anything at the terminal is unknown.
"""

import collections
import inspect
import itertools
import json
import os
import sys
from typing import Optional

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from tradebot.broker import BrokerUnavailable
from tradebot.brokers.mt5 import wire
from tradebot.store.credentials import KEY_ENV


class LinkFailed(BrokerUnavailable):
    """No answer came back: a timeout, or the worker or bridge went away. The
    call may or may not have taken effect."""


class DirectLink:
    """Calls a module object in this process and answers at once. Each answer
    goes through JSON, as it would between processes."""

    def __init__(self, module):
        self.module = module

    def call(self, name: str, *args, **kwargs):
        """Deferred[dict]: the answer of ``module.<name>(*args, **kwargs)``."""
        return defer.execute(
            lambda: json.loads(json.dumps(wire.perform(self.module, name, list(args), kwargs)))
        )

    def stop(self):
        """Deferred: nothing to release."""
        return defer.succeed(None)


class _WorkerProcess(ProcessProtocol):
    """One worker process: answers read from its stdout, its stderr logged."""

    _log = Logger()

    def __init__(self, link: "WorkerLink"):
        self.link = link
        self._out = []  # chunks of an answer not yet ended by a newline
        self._err = b""
        self.stderr_tail = collections.deque(maxlen=10)
        self.ended = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        if b"\n" not in data:  # a large answer arrives in many chunks: join once
            self._out.append(data)
            return
        *lines, rest = (b"".join(self._out) + data).split(b"\n")
        self._out = [rest] if rest else []
        for line in lines:
            if line.strip():
                self.link._answered(self, line)

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                self._log.info("{label} worker: {line}", label=self.link.label, line=line)

    def processEnded(self, reason) -> None:
        self.link._ended(self, reason)
        if not self.ended.called:  # a stop that gave up waiting fired it already
            self.ended.callback(None)


class WorkerLink:
    """The native module in a worker process (see `tradebot.brokers.mt5.worker`).

    Calls are queued and sent one at a time. A call unanswered after
    `call_timeout` seconds kills the worker and fails with `LinkFailed`, as
    does every call under way when the worker dies; the next call starts a
    fresh worker, which must be initialised again. `env` is the worker's
    environment (default: this process's), less any ``TRADEBOT_MT5_PASSWORD*``
    and ``TRADEBOT_SECRET_KEY``.
    """

    _log = Logger()

    def __init__(
        self,
        reactor,
        python: str = sys.executable,
        env: Optional[dict] = None,
        call_timeout: float = 75.0,
        stop_timeout: float = 5.0,
        label: str = "mt5",
    ):
        self.reactor = reactor
        self.python = python
        self.env = dict(os.environ if env is None else env)
        # the worker gets the password, when it needs one, in a login call
        # only; nor does it get the key that decrypts the stored ones
        for name in [n for n in self.env if n.startswith("TRADEBOT_MT5_PASSWORD") or n == KEY_ENV]:
            del self.env[name]
        self.call_timeout = call_timeout
        self.stop_timeout = stop_timeout
        self.label = label
        #: Workers started so far; each one needs its own `initialize`.
        self.generation = 0
        self._queue = collections.deque()
        self._current = None  # (id, name, Deferred, timer)
        self._process: Optional[_WorkerProcess] = None
        self._transport = None
        self._ids = itertools.count(1)
        self._stopping = False

    @property
    def pid(self) -> Optional[int]:
        """The running worker's process id, if one runs."""
        return self._transport.pid if self._transport is not None else None

    def call(self, name: str, *args, **kwargs):
        """Deferred[dict]: the worker's answer to ``<name>(*args, **kwargs)``;
        the arguments must be JSON values."""
        if self._stopping:
            return defer.fail(LinkFailed(f"{self.label} link is stopping"))
        try:
            line = json.dumps({"name": name, "args": list(args), "kwargs": kwargs})
        except (TypeError, ValueError) as e:
            return defer.fail(TypeError(f"{name}: arguments must be JSON values: {e}"))
        answer = defer.Deferred()
        self._queue.append((name, line, answer))
        self._send_next()
        return answer

    def _send_next(self) -> None:
        if self._current is not None or not self._queue:
            return
        if self._process is None and not self._spawn():
            return
        name, line, answer = self._queue.popleft()
        call_id = next(self._ids)
        # the id goes first: cheap to splice into the already-encoded request
        request = '{"id": %d, %s' % (call_id, line[1:])
        timer = self.reactor.callLater(self.call_timeout, self._timed_out, call_id)
        self._current = (call_id, name, answer, timer)
        self._transport.write(request.encode("utf-8") + b"\n")

    def _spawn(self) -> bool:
        """Start a worker; False (and the queue failed) if it cannot start."""
        self.generation += 1
        process = _WorkerProcess(self)
        try:
            self._transport = self.reactor.spawnProcess(
                process,
                self.python,
                [self.python, "-u", "-m", "tradebot.brokers.mt5.worker"],
                env=self.env,
            )
        except Exception as e:  # no such interpreter; on Windows, no pywin32
            self._log.error("{label} worker cannot start: {error}", label=self.label, error=e)
            self._fail_queue(f"the {self.label} worker cannot start: {e}")
            return False
        self._process = process
        self._log.info(
            "{label} worker started (pid {pid}, worker #{n})",
            label=self.label,
            pid=self._transport.pid,
            n=self.generation,
        )
        return True

    def _answered(self, process: _WorkerProcess, line: bytes) -> None:
        if process is not self._process or self._current is None:
            return  # a killed worker's last words
        call_id, name, answer, timer = self._current
        try:
            reply = json.loads(line)
        except ValueError:
            self._log.warn("{label} worker wrote a line that is not JSON; ignored", label=self.label)
            return
        if reply.get("id") != call_id:
            self._log.warn("{label} worker answered call {got}, not {want}; ignored", label=self.label, got=reply.get("id"), want=call_id)
            return
        timer.cancel()
        self._current = None
        answer.callback(reply)
        self._send_next()

    def _timed_out(self, call_id: int) -> None:
        call_id, name, answer, _ = self._current
        self._log.warn(
            "{label} worker gave no answer to {name} within {seconds:g} s; killing it",
            label=self.label,
            name=name,
            seconds=self.call_timeout,
        )
        self._current = None
        self._discard_worker()
        answer.errback(LinkFailed(f"{name}: no answer from the terminal within {self.call_timeout:g} s"))
        self._send_next()

    def _fail_current(self, why: str) -> None:
        if self._current is not None:
            _, name, answer, timer = self._current
            self._current = None
            if timer.active():
                timer.cancel()
            answer.errback(LinkFailed(f"{name}: {why}"))

    def _discard_worker(self) -> None:
        transport, self._transport, self._process = self._transport, None, None
        try:
            transport.signalProcess("KILL")
        except Exception:  # already gone
            pass

    def _ended(self, process: _WorkerProcess, reason) -> None:
        if process is not self._process:
            return
        self._process = self._transport = None
        status = getattr(reason.value, "exitCode", None)
        detail = "; ".join(process.stderr_tail) or "no output"
        if not self._stopping:
            self._log.warn(
                "{label} worker exited (status {status}): {detail}",
                label=self.label,
                status=status,
                detail=detail,
            )
        self._fail_current(f"the {self.label} worker exited ({detail})")
        if self._stopping:
            self._fail_queue()
        else:
            self._send_next()

    def _fail_queue(self, why: Optional[str] = None) -> None:
        while self._queue:
            name, _, answer = self._queue.popleft()
            answer.errback(LinkFailed(f"{name}: {why or f'the {self.label} link stopped'}"))

    def stop(self):
        """Deferred: the worker has exited, asked to by closing its input, and
        killed if it has not after `stop_timeout` seconds."""
        self._stopping = True
        self._fail_queue()
        process = self._process
        if process is None:
            return defer.succeed(None)
        self._transport.closeStdin()

        def _kill():
            self._discard_worker()
            self._fail_current(f"the {self.label} link stopped")
            if not process.ended.called:
                process.ended.callback(None)

        killer = self.reactor.callLater(self.stop_timeout, _kill)

        def _ended(_):
            if killer.active():
                killer.cancel()

        process.ended.addCallback(_ended)
        return process.ended


class RpycLink:
    """The mt5linux bridge: an rpyc classic server on the Windows Python next
    to the terminal, reached from one dedicated thread.

    The first call connects, imports ``MetaTrader5`` there and defines
    `tradebot.brokers.mt5.wire` there, so that each call is one round trip that
    returns a JSON string: nothing but builtins crosses the wire. A call
    unanswered after `call_timeout` seconds drops the connection and fails
    with `LinkFailed`; the next call connects again.
    """

    _log = Logger()

    def __init__(self, reactor, host: str, port: int, call_timeout: float = 75.0):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.call_timeout = call_timeout
        self.label = f"mt5linux {host}:{port}"
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="mt5linux")
        self._connection = None
        self._ids = itertools.count(1)

    def call(self, name: str, *args, **kwargs):
        """Deferred[dict]: the bridge's answer to ``<name>(*args, **kwargs)``."""
        if not self._pool.started:
            self._pool.start()
            self._shutdown = self.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        try:
            line = json.dumps({"id": next(self._ids), "name": name, "args": list(args), "kwargs": kwargs})
        except (TypeError, ValueError) as e:
            return defer.fail(TypeError(f"{name}: arguments must be JSON values: {e}"))
        return deferToThreadPool(self.reactor, self._pool, self._blocking_call, name, line)

    def _blocking_call(self, name: str, line: str) -> dict:
        import rpyc

        try:
            if self._connection is None:
                connection = rpyc.classic.connect(self.host, self.port, keepalive=True)
                connection._config["sync_request_timeout"] = self.call_timeout
                connection.execute("import MetaTrader5 as mt5")
                connection.execute(inspect.getsource(wire))
                self._connection = connection
            return json.loads(self._connection.eval(f"perform_json(mt5, {line!r})"))
        except Exception as e:  # connection refused or lost, timeout, remote error
            self._drop_connection()
            raise LinkFailed(f"{name}: {self.label}: {type(e).__name__}: {e}") from e

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass

    def stop(self):
        """Deferred: the connection closed and the thread stopped."""
        if not self._pool.started:
            return defer.succeed(None)
        d = deferToThreadPool(self.reactor, self._pool, self._drop_connection)

        def _stop_pool(result):
            self.reactor.removeSystemEventTrigger(self._shutdown)
            self._pool.stop()
            return result

        return d.addBoth(_stop_pool)

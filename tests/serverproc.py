"""
``twistd tradebot`` as a process of its own, for tests that kill it or stop it
with a signal: its JSON log lines and its standard error read as they come,
its port taken from its "listening" line, its end as a Deferred. Nothing here
sleeps: every wait is on the process's own output or end, with a timeout.

`Servers` (the ``servers`` fixture of the tests that use it) starts them and,
at the end of the test, kills any still running, so a failed test leaves no
process behind.
"""

import json
import os
import sys

from twisted.internet import defer, protocol, reactor

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
FAST_PAPER = "paper://?seed=11&speed=300"


class ServerProcess(protocol.ProcessProtocol):
    """One ``twistd --nodaemon tradebot --log-format json`` process."""

    def __init__(self, name: str):
        self.name = name
        self.lines = []  # standard output: one JSON log record a line
        self.errors = []  # standard error, line by line
        self._buffers = {1: b"", 2: b""}
        self._waiters = []  # (predicate over stdout lines, Deferred)
        self.ended = defer.Deferred()  # fires with (exit code, signal)
        self.port = None
        self.transport = None

    # -- output --------------------------------------------------------------

    def childDataReceived(self, fd, data):
        self._buffers[fd] = self._buffers.get(fd, b"") + data
        *lines, self._buffers[fd] = self._buffers[fd].split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if fd == 2:
                self.errors.append(line)
                continue
            self.lines.append(line)
            for waiter in list(self._waiters):
                if waiter[0](line):
                    self._waiters.remove(waiter)
                    waiter[1].callback(line)

    def processEnded(self, reason):
        for waiter in self._waiters:
            waiter[1].errback(AssertionError(f"{self.name} ended while a line was awaited:\n{self.output()}"))
        self._waiters = []
        self.ended.callback((reason.value.exitCode, reason.value.signal))

    def wait_for_line(self, predicate, timeout=60):
        """Deferred[str]: the first output line (past or future) that matches."""
        for line in self.lines:
            if predicate(line):
                return defer.succeed(line)
        if self.ended.called:
            return defer.fail(AssertionError(f"{self.name} has ended:\n{self.output()}"))
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def records(self):
        """The log records written so far."""
        return [json.loads(line) for line in self.lines if line.strip()]

    def output(self) -> str:
        """What the process wrote, for a failing assertion's message."""
        return "\n".join(self.lines[-40:] + ["-- stderr --"] + self.errors[-40:])

    # -- life ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True until the process has ended."""
        return not self.ended.called

    async def listening(self, timeout=60) -> int:
        """The port, once the server listens."""
        line = await self.wait_for_line(lambda line: "tradebot listening on" in line, timeout)
        text = json.loads(line)["text"]
        self.port = int(text.split("(")[1].split(")")[0].rsplit(":", 1)[1])
        return self.port

    def url(self, token: str) -> str:
        """The websocket URL of an account's token."""
        return f"ws://127.0.0.1:{self.port}/ws/check/premium/?{token}"

    def signal(self, name: str) -> None:
        """Send the process a signal ("TERM", "KILL")."""
        self.transport.signalProcess(name)

    async def end(self, timeout=60):
        """(exit code, signal) once the process has ended."""
        return await _wait(self.ended, timeout)

    def failpoint(self) -> dict:
        """The details of the fail point that killed the process, from its
        line on standard error: {"point": name, key: value...}."""
        for line in self.errors:
            if line.startswith("tradebot failpoint "):
                head, _, rest = line[len("tradebot failpoint "):].partition(" (")
                fields = dict(item.split("=", 1) for item in rest.split(")")[0].split())
                return {"point": head, **fields}
        raise AssertionError(f"{self.name} reached no fail point:\n{self.output()}")

    def logged_errors(self):
        """The records logged at error level or above, or carrying a traceback."""
        return [
            r for r in self.records()
            if r.get("level") in ("error", "critical") or "Traceback" in r.get("text", "")
        ]


def _wait(d, timeout):
    """`d`'s result without consuming it, failing after `timeout` seconds."""
    waiter = defer.Deferred()
    d.addBoth(lambda result: (waiter.called or waiter.callback(result), result)[1])
    return waiter.addTimeout(timeout, reactor)


class Servers:
    """Starts `ServerProcess`es for one test and kills the ones left."""

    def __init__(self, cwd, twistd=TWISTD, env=None):
        self.cwd = str(cwd)
        self.twistd = str(twistd)
        self.env = env  # the servers' environment unless `start` is given one
        self.started = []

    def start(
        self,
        db_url: str,
        broker: str = FAST_PAPER,
        env=None,
        failpoints: str = "",
        signal_interval="0.3",
        monitor_interval="0.2",
        extra=(),
    ) -> ServerProcess:
        """A server on 127.0.0.1 (a free port) and `db_url`, with the fail
        points named in `failpoints` armed; `env` is its environment
        (default: this process's)."""
        environment = dict(env if env is not None else self.env if self.env is not None else os.environ)
        environment.pop("TRADEBOT_FAILPOINTS", None)
        if failpoints:
            environment["TRADEBOT_FAILPOINTS"] = failpoints
        server = ServerProcess(f"server #{len(self.started) + 1}")
        args = [
            self.twistd, "--nodaemon", "--pidfile=", "tradebot", "--log-format", "json",
            "--port", "tcp:0:interface=127.0.0.1", "--db", db_url, "--broker", broker,
            "--signal-interval", str(signal_interval), "--monitor-interval", str(monitor_interval),
            *extra,
        ]
        server.transport = reactor.spawnProcess(server, self.twistd, args, env=environment, path=self.cwd)
        self.started.append(server)
        return server

    async def kill_all(self):
        """Kill (SIGKILL) every server still running and wait for its end."""
        for server in self.started:
            if server.running:
                server.signal("KILL")
                await _wait(server.ended, 30)

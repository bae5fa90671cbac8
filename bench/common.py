"""
What the benchmarks share: a server run as its own `twistd tradebot` process
on a fresh database, accounts made in bulk, many real websocket clients, and
readings of the server's memory and CPU from /proc.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer

from tradebot.store.db import SyncStore

#: The checkout these benchmarks belong to.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from tradebot.store.tokens import hash_token, new_token


def raise_fd_limit(wanted=8192):
    """Allow this process (and the server it starts) `wanted` open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_accounts(db_url, count, symbols=("XAUUSD", "EURUSD"), always_on=False):
    """Create `count` accounts; return their tokens."""
    store = SyncStore(db_url)
    store.create_schema()
    tokens = []
    for i in range(count):
        token = new_token()
        store.add_account(f"bench{i}", symbols, Decimal(10000), "default", 1, always_on, hash_token(token))
        tokens.append(token)
    store.close()
    return tokens


class Server:
    """``twistd -n tradebot`` in its own process, on a fresh SQLite file."""

    def __init__(self, broker="paper://?seed=7&speed=1", signal_interval=60, monitor_interval=1, extra=()):
        self.dir = tempfile.mkdtemp(prefix="tradebot-bench-")
        self.db_url = f"sqlite:///{self.dir}/bench.sqlite"
        self.port = free_port()
        self.args = [
            os.path.join(os.path.dirname(sys.executable), "twistd"), "--nodaemon", "--pidfile=", "--logfile", f"{self.dir}/server.log",
            "tradebot", "--port", f"tcp:{self.port}:interface=127.0.0.1", "--db", self.db_url,
            "--broker", broker, "--signal-interval", str(signal_interval),
            "--monitor-interval", str(monitor_interval),
            # every bench client comes from 127.0.0.1, many to one account
            "--max-connections-per-ip", "1000000", "--max-handshakes-per-ip", "1000000",
            "--max-connections-per-account", "1000000",
            *extra,
        ]
        self.process = None

    def start(self):
        """Start the server and wait until it listens."""
        SyncStore(self.db_url).create_schema()
        # the server runs this checkout's code, whatever the virtualenv holds
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(self.args, cwd=self.dir, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited; see {self.dir}/server.log")
                time.sleep(0.1)
        raise RuntimeError("server did not start listening")

    def url(self, token):
        return f"ws://127.0.0.1:{self.port}/ws/check/premium/?{token}"

    def rss_kib(self):
        """The server's resident memory, in KiB."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self):
        """User plus system CPU time the server has used."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class CountingClient(WebSocketClientProtocol):
    """Counts messages; optionally sends ping on open; notes when each kind of
    message arrived."""

    def onOpen(self):
        self.was_opened = True
        self.factory.bench.opened += 1
        if self.factory.ping:
            self.sendMessage(b'{"msg": "ping"}')
        self.factory.bench.check_done()

    def onMessage(self, payload, isBinary):
        self.factory.bench.on_message(self, payload)

    def onClose(self, wasClean, code, reason):
        self.factory.bench.closed += 1
        if not getattr(self, "was_opened", False):
            self.factory.bench.failed.append(reason)
            self.factory.bench.check_done()


class CountingFactory(WebSocketClientFactory):
    """Notes connections that fail before TCP connects."""

    def clientConnectionFailed(self, connector, reason):
        self.bench.failed.append(reason.getErrorMessage())
        self.bench.check_done()


class Clients:
    """Many client connections in this process."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.opened = 0
        self.closed = 0
        self.wanted = 0
        self.messages = 0
        self.failed = []  # why each connection that never opened failed
        self.all_open = defer.Deferred()
        self.listeners = []
        self.protocols = []

    def on_message(self, protocol, payload):
        self.messages += 1
        for listener in self.listeners:
            listener(protocol, json.loads(payload))

    def check_done(self):
        """A connection opened or failed: start the next one; fire
        `all_open` once every connection opened or failed."""
        self._in_flight -= 1
        self._launch()
        if self.opened + len(self.failed) >= self.wanted and not self.all_open.called:
            self.all_open.callback(None)

    def connect_all(self, urls, ping, at_once=100):
        """Deferred: fires when every connection is open (or failed, listed in
        `failed`). At most `at_once` opening handshakes are under way at a
        time, as clients arriving over a few seconds would be."""
        self.wanted += len(urls)
        self._queue = [(url, ping) for url in urls]
        self._in_flight = 0
        self._at_once = at_once
        self._launch()
        return self.all_open

    def _launch(self):
        while self._queue and self._in_flight < self._at_once:
            url, ping = self._queue.pop()
            self._in_flight += 1
            factory = CountingFactory(url)
            factory.protocol = CountingClient
            factory.bench = self
            factory.ping = ping
            factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=60)
            connectWS(factory)

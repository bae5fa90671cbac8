"""
What the server exposes to Prometheus at ``GET /metrics``.

One `Metrics` per server, on its own registry (never the process-wide one, so
two servers in one process, as in the tests, do not mix). Counters are bumped
where things happen; gauges of what exists now (connections, sessions, open
trades) are read at scrape time from the objects that hold them.

| metric | type | labels |
| --- | --- | --- |
| ``tradebot_connections`` | gauge | |
| ``tradebot_streaming_connections`` | gauge | |
| ``tradebot_sessions`` | gauge | |
| ``tradebot_open_trades`` | gauge | |
| ``tradebot_trades_closing`` | gauge | |
| ``tradebot_trades_total`` | counter | ``result``: profit, loss, refused, cancelled |
| ``tradebot_messages_sent_total`` | counter | |
| ``tradebot_broker_call_seconds`` | histogram | ``broker`` (its opaque name), ``call`` |
| ``tradebot_loop_lag_seconds`` | histogram | |
| ``tradebot_database_errors_total`` | counter | ``kind``: retried, failed |
| ``tradebot_broker_available`` | gauge | ``broker`` |
"""

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The server's metrics on a registry of their own."""

    _log = Logger()

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.connections = Gauge("tradebot_connections", "Open websocket connections.", registry=registry)
        self.streaming = Gauge(
            "tradebot_streaming_connections", "Connections that sent ping and receive the stream.", registry=registry
        )
        self.sessions = Gauge("tradebot_sessions", "Running account sessions.", registry=registry)
        self.open_trades = Gauge("tradebot_open_trades", "Trades pending or open.", registry=registry)
        self.closing = Gauge(
            "tradebot_trades_closing", "Trades whose close the broker refused and is being asked again.",
            registry=registry,
        )
        self.trades = Counter(
            "tradebot_trades", "Trades that ended, by result.", ["result"], registry=registry
        )
        self.messages_sent = Counter(
            "tradebot_messages_sent", "Messages written to client connections.", registry=registry
        )
        self.broker_calls = Histogram(
            "tradebot_broker_call_seconds",
            "Time a broker call took, from the server's side.",
            ["broker", "call"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 75),
            registry=registry,
        )
        self.loop_lag = Histogram(
            "tradebot_loop_lag_seconds",
            "How late the reactor ran a call due every second.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.database_errors = Counter(
            "tradebot_database_errors",
            "Database operations that failed: retried (and then went through or not) or failed for good.",
            ["kind"],
            registry=registry,
        )
        self.broker_available = Gauge(
            "tradebot_broker_available", "1 while the broker can take orders.", ["broker"], registry=registry
        )
        self._lag_loop = None
        # every series exists from the start, at 0, so a rate() has a baseline
        for result in ("profit", "loss", "refused", "cancelled"):
            self.trades.labels(result=result)
        for kind in ("retried", "failed"):
            self.database_errors.labels(kind=kind)

    def watch(self, connections: Callable[[], int], sessions_manager) -> None:
        """Read the gauges of what exists from `connections()` and the
        session manager at each scrape."""
        self.connections.set_function(connections)
        self.sessions.set_function(lambda: len(sessions_manager.sessions))
        self.streaming.set_function(
            lambda: sum(s.streaming_count for s in sessions_manager.sessions.values())
        )
        self.open_trades.set_function(
            lambda: sum(len(s.live_trades) for s in sessions_manager.sessions.values())
        )
        self.closing.set_function(lambda: sum(len(s.closing) for s in sessions_manager.sessions.values()))

    def watch_brokers(self, backends) -> None:
        """Report each broker backend's availability at each scrape."""
        collector = self.broker_available

        def _collect(backend):
            return lambda: 1.0 if getattr(backend, "available", True) else 0.0

        known = set()

        def refresh():
            for backend in backends.backends:
                if backend.name not in known:
                    known.add(backend.name)
                    collector.labels(broker=backend.name).set_function(_collect(backend))

        self._refresh_brokers = refresh
        refresh()

    def render(self) -> bytes:
        """The exposition text of every metric now."""
        refresh = getattr(self, "_refresh_brokers", None)
        if refresh is not None:
            refresh()
        return generate_latest(self.registry)

    def start_lag_probe(self, clock, interval: float = 1.0) -> None:
        """Measure how late the reactor runs a call due every `interval` s."""
        expected = [time.monotonic() + interval]

        def probe():
            now = time.monotonic()
            self.loop_lag.observe(max(0.0, now - expected[0]))
            expected[0] = now + interval

        self._lag_loop = LoopingCall(probe)
        self._lag_loop.clock = clock
        self._lag_loop.start(interval, now=False).addErrback(lambda f: self._log.failure("lag probe stopped", f))

    def stop(self) -> None:
        """Stop the lag probe."""
        if self._lag_loop is not None and self._lag_loop.running:
            self._lag_loop.stop()

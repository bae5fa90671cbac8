"""
The delay from a price crossing a trade's SL/TP to message 3 reaching a client.

Runs the server's service in this process on a real TCP port, on a paper market
sped up `--speed` times, with `--accounts` accounts each streamed by a real
websocket client, until `--trades` trades have closed. The paper market records
the simulated second at which the price crossed the stop; mapped back to real
time, that is when the close happened, and the client notes when message 3
arrived. Target: within one monitor interval plus 50 ms.

The crossing is known to one simulated second, so each figure can be early by
up to 1/speed s (33 ms at the default speed 30): the figures are upper bounds.

    .venv/bin/python bench/close_latency.py [--accounts 20] [--trades 60]
"""

import argparse
import statistics
import tempfile

from common import Clients, free_port, make_accounts, raise_fd_limit
from twisted.internet import defer, task

from tradebot.server.tap import Options, makeService
from tradebot.store.db import SyncStore


async def main(reactor, accounts, trades, speed, monitor_interval):
    raise_fd_limit()
    folder = tempfile.mkdtemp(prefix="tradebot-bench-")
    db_url = f"sqlite:///{folder}/bench.sqlite"
    tokens = make_accounts(db_url, accounts, symbols=("XAUUSD", "EURUSD", "GBPUSD", "USDJPY", "BTCUSD"))
    port = free_port()
    config = Options()
    config.parseOptions(
        [
            "--port", f"tcp:{port}:interface=127.0.0.1", "--db", db_url,
            "--broker", f"paper://?seed=7&speed={speed}",
            "--signal-interval", "1", "--monitor-interval", str(monitor_interval),
        ]
    )
    service = makeService(config, reactor)
    service.startService()
    await service.started
    market = service.backend.market

    arrivals = {}  # trade id -> reactor time message 3 arrived
    enough = defer.Deferred()

    def on_message(protocol, message):
        if message.get("message") == "Trade completed":
            arrivals[message["data"]["trade_id"]] = reactor.seconds()
            if len(arrivals) >= trades and not enough.called:
                enough.callback(None)

    clients = Clients(reactor)
    clients.listeners.append(on_message)
    try:
        await clients.connect_all(
            [f"ws://127.0.0.1:{port}/ws/check/premium/?{t}" for t in tokens], ping=True
        )
        await enough
    finally:
        await service.stopService()

    store = SyncStore(db_url)
    closed_at = {t.id: t.closed_at for _, t in store.trades() if t.id in arrivals}
    store.close()
    delays = sorted(arrivals[i] - market.real_time_of(closed_at[i]) for i in closed_at)
    ms = [1000 * d for d in delays]
    p95 = ms[max(0, int(0.95 * len(ms)) - 1)]
    print(
        f"{len(ms)} closes, {accounts} accounts, monitor interval {monitor_interval} s, speed {speed}: "
        f"crossing -> message 3 median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, "
        f"max {ms[-1]:.0f} ms (target {1000 * monitor_interval + 50:.0f} ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--trades", type=int, default=60)
    parser.add_argument("--speed", type=float, default=30)
    parser.add_argument("--monitor-interval", type=float, default=1.0)
    args = parser.parse_args()
    task.react(
        lambda reactor: defer.ensureDeferred(
            main(reactor, args.accounts, args.trades, args.speed, args.monitor_interval)
        )
    )

"""
GET /api/trades on an account with a long history: one call, then 20 at once
while /health is asked, on a `twistd tradebot` process of its own (SQLite).

    python bench/api_trades.py [TRADES]      # default 100,000

Prints the seconds one call took, the slowest of 20 parallel calls, and what
/health answered meanwhile (a busy database thread makes it 503). Run it on
two commits to compare (the same machine, one after the other).
"""

import json
import sys
import time

import treq
from twisted.internet import defer, task

sys.path.insert(0, __file__.rsplit("/", 2)[0])

from bench.common import Server, make_accounts  # noqa: E402
from tradebot.store.db import SyncStore  # noqa: E402
from tradebot.store.schema import trades  # noqa: E402


def fill(db_url, count):
    store = SyncStore(db_url)
    account_id = store.list_accounts()[0].id
    rows = [
        dict(
            account_id=account_id, symbol="EURUSD", side="BUY", status="closed", comment=f"tb-b{n}",
            lot_size="0.01", stop_loss="1.08", take_profit="1.09", open_price="1.085", close_price="1.09",
            profit="5", result="profit", close_reason="tp", phase=1, step=1, phase_after=1, step_after=1,
            balance_after=str(10000 + 5 * (n + 1)), created_at=float(n), opened_at=float(n), closed_at=n + 0.5,
        )
        for n in range(count)
    ]
    with store.engine.begin() as conn:
        for start in range(0, count, 10000):
            conn.execute(trades.insert(), rows[start:start + 10000])
    store.close()


async def main(reactor, count):
    server = Server(signal_interval=3600)
    [token] = make_accounts(server.db_url, 1)
    fill(server.db_url, count)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        auth = {"Authorization": f"Bearer {token}"}

        async def call():
            started = time.monotonic()
            response = await treq.get(base + "/api/trades", headers=auth)
            body = await response.content()
            return time.monotonic() - started, response.code, len(json.loads(body).get("trades", []))

        one, code, returned = await call()
        print(f"{count} trades: one call {one:.3f} s (HTTP {code}, {returned} trades returned)")
        health = []

        async def watch_health():
            for _ in range(40):
                started = time.monotonic()
                response = await treq.get(base + "/health")
                await response.content()
                health.append((response.code, time.monotonic() - started))
                await task.deferLater(reactor, 0.05, lambda: None)

        watcher = defer.ensureDeferred(watch_health())
        results = await defer.gatherResults([defer.ensureDeferred(call()) for _ in range(20)])
        await watcher
        slowest = max(r[0] for r in results)
        codes = sorted({r[1] for r in results})
        print(f"20 at once: slowest {slowest:.3f} s, codes {codes}")
        print(f"/health meanwhile: codes {sorted({c for c, _ in health})}, slowest {max(t for _, t in health):.3f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, int(sys.argv[1]) if len(sys.argv) > 1 else 100000)))

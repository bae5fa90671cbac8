"""
What the MT5 broker worker costs, and what a hung terminal costs the reactor.

Serves the tests' fake terminal on 127.0.0.1 and runs the real broker worker
(``python -m tradebot.brokers.mt5.worker``) against it, as the ``mt5://`` broker does:

1. round trips: `--calls` sequential ``symbol_info_tick`` calls through the
   worker to a fake terminal in a third process (latency median and p99, calls
   per second, the server process's CPU per call; the fake's own socket hop is
   included, where the real module would make its named-pipe call);
2. a hang: the terminal stops answering and the link times out after 2 s; the
   reactor's lag is sampled every 10 ms meanwhile (it should stay near zero).

    .venv/bin/python bench/mt5_worker.py [--calls 2000]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakemt5.fake_terminal import FakeTerminal  # noqa: E402
from tests.fakemt5.terminal_server import TerminalServer  # noqa: E402
from tradebot.brokers.mt5.links import LinkFailed, WorkerLink  # noqa: E402

TERMINAL_PROCESS = """
import sys
from twisted.internet import reactor
from tests.fakemt5.fake_terminal import FakeTerminal
from tests.fakemt5.terminal_server import TerminalServer
port = reactor.listenTCP(0, TerminalServer(FakeTerminal(market_watch=("EURUSD",))), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


def worker_environment(address):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "fakemt5"), str(ROOT)])
    env["FAKE_MT5_TERMINAL"] = address
    return env


async def main(reactor, calls):
    terminal = subprocess.Popen(
        [sys.executable, "-c", TERMINAL_PROCESS], stdout=subprocess.PIPE, text=True, env=worker_environment("")
    )
    address = f"127.0.0.1:{terminal.stdout.readline().strip()}"
    try:
        await round_trips(reactor, calls, address)
    finally:
        terminal.kill()
        terminal.wait()
    await hang(reactor)


async def round_trips(reactor, calls, address):
    link = WorkerLink(reactor, env=worker_environment(address), call_timeout=10.0)
    try:
        await link.call("initialize")
        for _ in range(50):  # warm up
            await link.call("symbol_info_tick", "EURUSD")
        latencies = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            started = time.perf_counter()
            answer = await link.call("symbol_info_tick", "EURUSD")
            latencies.append(time.perf_counter() - started)
            assert "error" not in answer
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        latencies.sort()
        print(
            f"{calls} calls through the worker: median {1e3 * statistics.median(latencies):.2f} ms, "
            f"p99 {1e3 * latencies[int(0.99 * len(latencies))]:.2f} ms, {calls / wall:.0f} calls/s, "
            f"server-side CPU {1e6 * cpu / calls:.0f} us per call"
        )
    finally:
        await link.stop()


async def hang(reactor):
    server = TerminalServer(FakeTerminal(market_watch=("EURUSD",)))
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    link = WorkerLink(reactor, env=worker_environment(f"127.0.0.1:{port.getHost().port}"), call_timeout=2.0)
    try:
        await link.call("initialize")
        server.hold()
        lags = []
        expected = [time.perf_counter() + 0.01]

        def sample():
            now = time.perf_counter()
            lags.append(now - expected[0])
            expected[0] = now + 0.01

        sampler = task.LoopingCall(sample)
        sampler.start(0.01, now=False)
        try:
            await link.call("symbol_info_tick", "EURUSD")
        except LinkFailed as e:
            outcome = str(e)
        sampler.stop()
        server.release()
        print(
            f"terminal hung for 2 s: {outcome!r}; reactor lag over {len(lags)} samples: "
            f"max {1e3 * max(lags):.1f} ms, median {1e3 * statistics.median(lags):.1f} ms"
        )
    finally:
        await link.stop()
        await port.stopListening()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args.calls)))

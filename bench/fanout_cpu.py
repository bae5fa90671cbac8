"""
Server CPU per delivered message, with 1,000 streaming accounts.

Starts `twistd tradebot` in its own process with 1,000 accounts, each with one
streaming connection, and the signal check every second (so each account is
sent a "checking for signal..." per symbol per second, plus whatever trades
the paper market brings). Counts the messages the clients receive over a
window and divides the server's CPU time by it.

    .venv/bin/python bench/fanout_cpu.py [--accounts 1000] [--seconds 20]
"""

import argparse

from common import Clients, Server, make_accounts, raise_fd_limit
from twisted.internet import defer, task


async def main(reactor, accounts, seconds):
    raise_fd_limit()
    server = Server(signal_interval=1, monitor_interval=1)
    tokens = make_accounts(server.db_url, accounts)
    server.start()
    try:
        clients = Clients(reactor)
        await clients.connect_all([server.url(t) for t in tokens], ping=True)
        await task.deferLater(reactor, 3.0, lambda: None)  # every session running
        cpu0, messages0 = server.cpu_seconds(), clients.messages
        await task.deferLater(reactor, seconds, lambda: None)
        cpu, messages = server.cpu_seconds() - cpu0, clients.messages - messages0
    finally:
        server.stop()
    print(
        f"{accounts} streaming accounts, {seconds} s: {messages} messages delivered "
        f"({messages / seconds:.0f}/s), server CPU {cpu:.2f} s "
        f"({100 * cpu / seconds:.0f}% of one core), {1e6 * cpu / max(messages, 1):.0f} us per message"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args.accounts, args.seconds)))

"""
Server memory per idle connection, with 1,000 connected.

Starts `twistd tradebot` in its own process, opens connections that never send
ping, and reads the server's resident memory before and after. Two shapes:
1,000 connections of one account, and one connection each for 1,000 accounts
(which adds a session per account). Target: under 15 KB per connection.

    .venv/bin/python bench/idle_memory.py [--connections 1000]
"""

import argparse
import sys

from common import Clients, Server, make_accounts, raise_fd_limit
from twisted.internet import defer, task


async def measure(reactor, server, warm_url, urls):
    warm = Clients(reactor)  # one connection first, so code paths are warm
    await warm.connect_all([warm_url], ping=False)
    await task.deferLater(reactor, 1.0, lambda: None)
    before = server.rss_kib()
    clients = Clients(reactor)
    await clients.connect_all(urls, ping=False)
    if clients.failed:
        print(f"{len(clients.failed)} connections failed, e.g. {clients.failed[0]}", file=sys.stderr)
    await task.deferLater(reactor, 3.0, lambda: None)  # let the server settle
    after = server.rss_kib()
    return before, after, clients.opened


async def main(reactor, count):
    raise_fd_limit()
    results = []
    for shape in ("one account", "one account each"):
        server = Server()
        tokens = make_accounts(server.db_url, 1 if shape == "one account" else count + 1)
        server.start()
        try:
            if shape == "one account":
                urls = [server.url(tokens[0])] * count
            else:
                urls = [server.url(t) for t in tokens[1:]]
            before, after, opened = await measure(reactor, server, server.url(tokens[0]), urls)
        finally:
            server.stop()
        per = (after - before) * 1024 / max(opened, 1)
        results.append((shape, opened, before, after, per))
    for shape, opened, before, after, per in results:
        print(f"{opened} idle connections, {shape}: RSS {before} KiB -> {after} KiB, {per / 1000:.1f} KB per connection")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args.connections)))

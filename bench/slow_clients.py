"""
Server memory with clients that stop reading.

Starts `twistd tradebot` in its own process with `--accounts` accounts (five
symbols each, a signal check every second and an open trade reported every
0.05 s), connects one streaming client per account with a small receive buffer
(4 KB, so the server's side fills within the minute rather than the kernel's
megabytes absorbing it), lets them read for a few seconds, then makes every
client stop reading (its socket is no longer read) for `--seconds`. Prints the server's
resident memory before and after, and how many clients the server closed as
too slow.

On loopback the kernel's socket buffers (which grow to megabytes) absorb a
minute of one account's messages (about 6 KB a second), so within the minute
the server's own buffers never fill and it closes no one: the figure is the
server's memory with the kernel holding what the clients left unread. That
the server holds messages back and then closes a client once its buffer does
fill is proven on a real socket with a 4 KB send buffer by
tests/test_slow_clients.py.

    .venv/bin/python bench/slow_clients.py [--accounts 100] [--seconds 60]
"""

import argparse
import socket

from common import Clients, Server, make_accounts, raise_fd_limit
from twisted.internet import defer, task

SYMBOLS = ("XAUUSD", "EURUSD", "GBPUSD", "USDJPY", "BTCUSD")


async def main(reactor, accounts, seconds, keep_reading=False):
    raise_fd_limit()
    server = Server(broker="paper://?seed=7&speed=60", signal_interval=1, monitor_interval=0.05)
    tokens = make_accounts(server.db_url, accounts, symbols=SYMBOLS)
    server.start()
    try:
        clients = Clients(reactor)
        seen = set()
        clients.listeners.append(lambda protocol, message: seen.add(protocol))
        await clients.connect_all([server.url(t) for t in tokens], ping=True)
        await task.deferLater(reactor, 5.0, lambda: None)  # streaming, read as it comes
        reading_rss, received = server.rss_kib(), clients.messages
        for protocol in seen:
            protocol.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            if not keep_reading:
                protocol.transport.pauseProducing()  # stop reading the socket
        samples = []
        for _ in range(int(seconds)):
            await task.deferLater(reactor, 1.0, lambda: None)
            samples.append(server.rss_kib())
        closed_by_server = clients.closed
        print(
            f"{len(seen)} clients, {received} messages read in 5 s; then "
            f"{'still reading' if keep_reading else 'not reading'} for {seconds:g} s: "
            f"server RSS {reading_rss / 1024:.1f} MiB while read, peak {max(samples) / 1024:.1f} MiB, "
            f"last {samples[-1] / 1024:.1f} MiB; {closed_by_server} clients closed by the server as too slow"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--keep-reading", action="store_true", help="the control: clients go on reading")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args.accounts, args.seconds, args.keep_reading)))

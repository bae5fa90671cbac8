"""
`tradebot watch`: a tiny websocket client that sends ping and prints each
message, its URL taken from the environment or stdin rather than argv (where
`ps` shows the token).
"""

import json
import os
import sys
from typing import Optional
from urllib.parse import urlsplit

from tradebot.cli.checks import PROG, CommandError


def _where(url: str) -> str:
    """The host:port of a websocket URL, for error messages (never the token)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return f"{parts.hostname}:{port}"


#: Where `watch` finds its URL when none is given.
WATCH_URL_ENV = "TRADEBOT_WATCH_URL"


def _url_from_outside() -> str:
    """The URL `watch` was not given on its command line: from the
    environment, else one line of standard input (asked for, unechoed, on a
    terminal), so the token never shows in argv."""
    url = os.environ.get(WATCH_URL_ENV, "").strip()
    if url:
        return url
    if sys.stdin.isatty():
        import getpass

        url = getpass.getpass("client URL (ws://...?TOKEN): ")
    else:
        url = sys.stdin.readline()
    if not url.strip():
        raise CommandError(f"watch: no URL (give it on standard input or in ${WATCH_URL_ENV})")
    return url.strip()


def check_ws_url(url: str) -> str:
    """`url` if it is a ws:// or wss:// URL with a host; raises `CommandError`
    (without repeating the URL, which may carry a token)."""
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        raise CommandError("watch: malformed URL")
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise CommandError("watch: the URL must start with ws:// or wss:// and name a host")
    return url


async def watch(reactor, url: str, count: Optional[int], out=None) -> int:
    """Connect to `url`, send ``{"msg": "ping"}`` and print every message as
    one JSON line until `count` messages (or forever). Returns 0 when done;
    1 after printing one error line when the connection or handshake fails
    or the server closes the connection."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
    from twisted.internet import defer

    out = out or sys.stdout
    done = defer.Deferred()
    state = {"received": 0, "opened": False, "stopping": False}

    def finish(error=None):
        if not done.called:
            done.callback(error)

    class Watcher(WebSocketClientProtocol):
        def onOpen(self):
            state["opened"] = True
            self.sendMessage(json.dumps({"msg": "ping"}).encode("utf-8"))

        def onMessage(self, payload, isBinary):
            if state["stopping"]:
                return
            try:
                message = json.loads(payload)
            except ValueError:
                message = payload.decode("utf-8", "replace") if isBinary is False else repr(payload)
            out.write(json.dumps(message) + "\n")
            out.flush()
            state["received"] += 1
            if count is not None and state["received"] >= count:
                state["stopping"] = True
                self.sendClose(1000)  # finish once the server answers (onClose)

        def onClose(self, wasClean, code, reason):
            if state["stopping"]:
                finish()
            elif not state["opened"]:
                finish(f"websocket handshake with {_where(url)} failed: {reason}")
            else:
                finish(f"connection to {_where(url)} closed ({code}{': ' + reason if reason else ''})")

    class Factory(WebSocketClientFactory):
        def clientConnectionFailed(self, connector, reason):
            finish(f"cannot connect to {_where(url)}: {reason.getErrorMessage()}")

        def clientConnectionLost(self, connector, reason):
            if not state["stopping"]:
                finish(f"connection to {_where(url)} lost: {reason.getErrorMessage()}")

    def on_shutdown():
        state["stopping"] = True  # Ctrl-C: not an error
        finish()

    trigger = reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    factory = Factory(url, reactor=reactor)
    factory.protocol = Watcher
    factory.noisy = False
    connectWS(factory, timeout=30)
    try:
        error = await done
    finally:
        reactor.removeSystemEventTrigger(trigger)
    if error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def _one_line(text) -> str:
    return " ".join(str(text).split())


def cmd_watch(args) -> int:
    """Run `watch` under its own reactor; the exit code it gives (0 when
    stopped with Ctrl-C)."""
    from twisted.internet.task import react

    outcome = {"code": 0}

    async def run(reactor):
        outcome["code"] = await watch(reactor, args.url, args.count)

    try:
        react(run)
    except SystemExit as e:
        if e.code not in (0, None):
            return e.code if isinstance(e.code, int) else 1
    return outcome["code"]

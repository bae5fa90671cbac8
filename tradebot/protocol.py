"""
The websocket protocol of ``/ws/check/premium/?TOKEN`` (docs/protocol.md).

Client frames are text frames holding one JSON object:

    {"msg": "ping"}   start streaming the account's session to this connection
    {"msg": "stop"}   stop streaming; the connection stays open

Anything else is answered with one ``invalid message`` error and the connection
stays open. A binary frame is closed with 1003, a frame or message over the
size limit with 1009, invalid UTF-8 with 1007, any other breach of the
websocket protocol with 1002 (all three by Autobahn), a client sending faster
than the rate limit with 1008. Those closes fail the connection: the TCP
connection ends right after the close frame, without waiting for the client's.

The token is checked during the opening handshake: a missing, unknown or
revoked token gets HTTP 403, any other path 404, and no websocket is opened;
once the server has begun to shut down (and closed its connections with 1001),
every handshake gets 503.
The protocol holds no trading logic: it attaches its connection to the
account's session and writes what the session publishes.

Its factory, holding what every connection shares, is
`tradebot.server.websocket.PremiumFactory`.
"""

import collections
import itertools
import json
from urllib.parse import parse_qs, unquote, urlsplit

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, task
from twisted.logger import Logger

from tradebot.server.limits import Refused
from tradebot.store.tokens import hash_token, token_matches
from tradebot.trading import messages

PREMIUM_PATHS = ("/ws/check/premium", "/ws/check/premium/")

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008


def token_from_uri(uri: str) -> str:
    """The token of a request URI: the whole raw query string (``?abc123``), or
    its ``token`` parameter (``?token=abc123``); "" when there is none."""
    query = urlsplit(uri).query
    if "=" in query:
        return parse_qs(query).get("token", [""])[-1]
    return unquote(query)


class RateLimit:
    """A token bucket: `rate` messages a second on average, bursts of `burst`."""

    def __init__(self, clock, rate: float, burst: float):
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = clock.seconds()

    def allow(self) -> bool:
        """Take one token; False when the bucket is empty."""
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class PremiumProtocol(WebSocketServerProtocol):
    """One client connection of one premium account."""

    # Autobahn owns `.log`; ours is `_log`.
    _log = Logger()

    def __init__(self):
        super().__init__()
        self._account = None
        self._token_hash = None
        self._ip = None
        self._counted = False
        self._session = None
        self._wants_stream = False
        # while the transport's buffer is full: messages waiting, by key
        self._behind = None  # (since, timer) while paused
        self._waiting = collections.OrderedDict()
        self._waiting_ids = itertools.count()
        self._rate = None
        self._close_waiters = []

    def when_closed(self):
        """Deferred: fires once this connection has closed."""
        waiter = defer.Deferred()
        self._close_waiters.append(waiter)
        return waiter

    def close_for_shutdown(self):
        """Deferred: close with 1001 (going away); fires once closed."""
        waiter = self.when_closed()
        self.close_with(CLOSE_GOING_AWAY, "server shutting down")
        return waiter

    def fail_with(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): send the close frame, then
        end the TCP connection at once (see `_hang_up`)."""
        self.close_with(code, reason)
        self._hang_up(code, reason)

    def _fail_connection(self, code=CLOSE_GOING_AWAY, reason="going away"):
        # Autobahn fails a connection here (a protocol violation, invalid
        # UTF-8, a frame or message over the size limit): it sends its close
        # frame, then would wait closeHandshakeTimeout for the client's reply.
        super()._fail_connection(code, reason)
        self._hang_up(code, reason)

    def _protocol_violation(self, reason):
        super()._protocol_violation(reason)
        return True  # stop reading the client's bytes: the connection is failed

    def _invalid_payload(self, reason):
        super()._invalid_payload(reason)
        return True

    def _hang_up(self, code: int, reason: str) -> None:
        # A client that breaks the protocol may never answer the close frame:
        # close the TCP connection as soon as the close frame is written
        # (loseConnection flushes it first), and read nothing more of what it
        # sent (RFC 6455 7.1.7), not even a close frame, which Autobahn would
        # take for the reply and abort on, discarding ours. Autobahn stays
        # CLOSING, so its closing handshake timer still aborts a client that
        # does not read.
        if self.state != self.STATE_CLOSING or self.transport is None:
            return
        self.droppedByMe = True
        self.wasNotCleanReason = f"failed the connection ({code}): {reason}"
        self.data = b""  # Autobahn's buffer of received bytes not yet parsed
        self.transport.unregisterProducer()  # a paused producer would hold the close back
        self.transport.loseConnection()

    def close_with(self, code: int, reason: str) -> None:
        """Start the closing handshake with a protocol close code (1001,
        1003, 1008, 1011), which Autobahn's `sendClose` reserves for itself;
        nothing happens if the connection is already closing."""
        if self._session is not None:
            self._session.stop_streaming(self)
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)

    # -- handshake -----------------------------------------------------------

    def onConnect(self, request):
        """Accept the handshake only on the premium path with a live token."""
        d = defer.ensureDeferred(self._authenticate(request))
        d.addErrback(self._deny_logged)
        return d

    async def _authenticate(self, request):
        self._refuse_if_closing()
        gate = self.factory.gatekeeper
        self._ip = gate.client_ip(self.transport.getPeer().host, request.headers.get("x-forwarded-for"))
        try:
            gate.before_token(self._ip)
        except Refused as e:
            raise ConnectionDeny(e.status, e.reason)
        if request.path not in PREMIUM_PATHS:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "Not Found")
        origin = (request.headers.get("origin") or "").rstrip("/").lower()
        if self.factory.allowed_origins and origin and origin not in self.factory.allowed_origins:
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "Origin not allowed")
        token = token_from_uri(self.http_request_uri)
        account = None
        if token:
            token_hash = hash_token(token)
            account = await self.factory.store.account_by_token_hash(token_hash)
            if account is not None and not token_matches(token, account.token_hash):
                account = None  # found by hash, confirmed in constant time: docs/architecture.md
        if account is None:
            delay = gate.failed(self._ip)
            if delay:
                await task.deferLater(self.factory.clock, delay, lambda: None)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "Forbidden")
        try:
            gate.check_account(account.id, self._ip)
        except Refused as e:
            raise ConnectionDeny(e.status, e.reason)
        self._refuse_if_closing()  # the server began to shut down during the lookup
        self._account = account
        self._token_hash = token_hash
        return None

    def _refuse_if_closing(self):
        if self.factory.closing:
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "Service Unavailable")

    def _deny_logged(self, failure):
        if not failure.check(ConnectionDeny):
            self._log.failure("authenticating a connection failed", failure)
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "Service Unavailable")
        return failure

    def onOpen(self):
        """Send message 1 and join the account's session."""
        self._rate = RateLimit(self.factory.clock, self.factory.message_rate, self.factory.message_burst)
        self._release_http_channel()
        # told when the write buffer fills (pauseProducing) and drains (resumeProducing)
        self.transport.registerProducer(self, True)
        self.factory.connections.add(self)
        self.factory.gatekeeper.opened(self._ip, self._account.id)
        self._counted = True
        self._send_now(messages.welcome(self._account.symbols))
        d = self.factory.sessions.session_for(self._account, self)
        d.addCallbacks(self._joined, self._join_failed)

    def _release_http_channel(self):
        # Twisted Web's HTTP channel registered itself as the transport's
        # producer; after Autobahn took the transport over it would keep the
        # channel and its request (about 4 KB) alive for the connection's life.
        # This protocol registers no producer, so any producer is the channel's.
        transport = self.transport
        producer = getattr(transport, "producer", None) or getattr(transport, "_producer", None)
        if producer is not None:
            transport.unregisterProducer()
        # Autobahn reads these only during the handshake (about 1 KB more).
        self.http_request_data = self.http_response_data = None
        self.http_headers = {}
        self.http_request_params = {}

    def _joined(self, session):
        if self._account is None:  # closed meanwhile
            session.detach(self)
            return
        self._session = session
        if self._wants_stream:
            return session.start_streaming(self)

    def _join_failed(self, failure):
        self._log.failure("connection could not join its session", failure)
        self.close_with(1011, "session unavailable")

    # -- client frames ---------------------------------------------------------

    def onMessage(self, payload, isBinary):
        """Dispatch ping and stop; answer anything else with an error."""
        if isBinary:
            self.fail_with(CLOSE_UNSUPPORTED_DATA, "binary frames are not accepted")
            return
        if not self._rate.allow():
            self._log.info("closing a connection of {name}: too many messages", name=self._account.name)
            self.fail_with(CLOSE_POLICY_VIOLATION, "too many messages")
            return
        command, error = parse_command(payload)
        if error is not None:
            self._send_now(messages.invalid_message(error))
            return
        getattr(self, "handle_" + command)()

    def handle_ping(self):
        """Start streaming (again ping while streaming changes nothing)."""
        self._wants_stream = True
        if self._session is not None:
            self._session.start_streaming(self)

    def handle_stop(self):
        """Stop streaming; the connection stays open."""
        self._wants_stream = False
        if self._session is not None:
            self._session.stop_streaming(self)

    def _send_now(self, message: dict) -> None:
        # Prepared, not sendMessage: Autobahn applies the limit it keeps on
        # client messages (max-message-size) to sendMessage's payload too.
        self.sendPreparedMessage(self.factory.prepareMessage(messages.encode(message)))

    def send_frame(self, frame, supersedes=None, written=None):
        """Write a message the session encoded once for all its connections;
        nothing once the closing handshake has begun (RFC 6455 5.5.1).

        While the client does not read fast enough (the transport's buffer is
        full), messages wait here instead: one whose `supersedes` key a newer
        message shares is replaced by it (an old report of the same trade),
        the others (a signal, a placement, a completion) all wait, in order.
        A client still behind after `slow_client_timeout` seconds, or with
        more than `max_waiting` messages waiting, is closed (1008).
        `written` is called once the frame is written, never if it is not."""
        if self.state != self.STATE_OPEN:
            return
        if self._behind is None and not self._waiting:
            self._write(frame, written)
            return
        key = ("superseding", supersedes) if supersedes is not None else ("keep", next(self._waiting_ids))
        self._waiting.pop(key, None)
        self._waiting[key] = (frame, written)
        if len(self._waiting) > self.factory.max_waiting:
            self._too_slow()

    # -- a client that does not read: IPushProducer ----------------------------------

    def pauseProducing(self):
        """The transport's buffer is full: hold messages back."""
        if self._behind is None:
            timer = self.factory.clock.callLater(self.factory.slow_client_timeout, self._too_slow)
            self._behind = (self.factory.clock.seconds(), timer)

    def resumeProducing(self):
        """The buffer drained: send what waited, oldest first."""
        if self._behind is not None:
            _, timer = self._behind
            self._behind = None
            if timer.active():
                timer.cancel()
        while self._waiting and self._behind is None and self.state == self.STATE_OPEN:
            _, (frame, written) = self._waiting.popitem(last=False)
            self._write(frame, written)

    def _write(self, frame, written) -> None:
        self.sendPreparedMessage(frame)
        if written is not None:
            try:
                written()
            except Exception:
                self._log.failure("after writing a message")

    def stopProducing(self):
        """The connection is going away."""
        self._waiting.clear()

    def _too_slow(self):
        if self._behind is not None and self._behind[1].active():
            self._behind[1].cancel()
        self._waiting.clear()
        if self.state == self.STATE_OPEN:
            name = self._account.name if self._account is not None else "?"
            self._log.info("closing a connection of {account}: it does not read its messages", account=name)
            self.close_with(CLOSE_POLICY_VIOLATION, "too slow")

    def onClose(self, wasClean, code, reason):
        """Leave the session."""
        self.factory.connections.discard(self)
        if self._behind is not None:
            if self._behind[1].active():
                self._behind[1].cancel()
            self._behind = None
        self._waiting.clear()
        if self._counted:
            self.factory.gatekeeper.closed(self._ip, self._account.id)
            self._counted = False
        for waiter in self._close_waiters:
            waiter.callback(None)
        self._close_waiters = []
        if self._session is not None:
            self._session.detach(self)
        self._session = None
        self._account = None


def parse_command(payload: bytes):
    """``(command, None)`` for a valid client frame, ``(None, error)`` otherwise."""
    try:
        frame = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "not a JSON text"
    except RecursionError:  # "[[[[...]]]]": deeper than the decoder goes
        return None, "JSON nested too deeply"
    if not isinstance(frame, dict):
        return None, "expected a JSON object"
    if "msg" not in frame:
        return None, 'missing "msg"'
    command = frame["msg"]
    if command not in ("ping", "stop"):
        return None, 'unknown "msg"; expected "ping" or "stop"'
    return command, None



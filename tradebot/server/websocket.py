"""
`PremiumFactory`: the websocket's factory, holding what every connection
shares (the store, the sessions, the limits and their gatekeeper, the timers
and sizes Autobahn is given), the periodic check that closes the connections
of a revoked or rotated token, and the close of every connection at shutdown.
"""


from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet import defer, task
from twisted.logger import Logger

from tradebot.protocol import CLOSE_POLICY_VIOLATION, PremiumProtocol
from tradebot.server.limits import Gatekeeper, Limits
from tradebot.trading import messages


class PremiumFactory(WebSocketServerFactory):
    """Builds `PremiumProtocol`s with explicit limits (Autobahn's defaults
    are unlimited) and frames each session message once."""

    protocol = PremiumProtocol
    _log = Logger()

    def __init__(
        self,
        store,
        sessions,
        clock,
        max_message_size: int = 4096,
        message_rate: float = 10.0,
        message_burst: float = 20.0,
        auto_ping_interval: float = 30.0,
        auto_ping_timeout: float = 20.0,
        open_handshake_timeout: float = 10.0,
        limits: Limits = Limits(),
        allowed_origins=(),
        token_check_interval: float = 2.0,
        slow_client_timeout: float = 60.0,
        max_waiting: int = 1000,
    ):
        super().__init__(server=None)
        self.store = store
        self.sessions = sessions
        self.clock = clock
        self.connections = set()
        self.closing = False  # set by close_all: the server is shutting down
        self.gatekeeper = Gatekeeper(limits, clock)
        # browsers send Origin: only these may connect, if any are listed (the apps send none)
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.token_check_interval = token_check_interval
        self.slow_client_timeout = slow_client_timeout
        self.max_waiting = max_waiting
        self._token_check = None
        self.message_rate = message_rate
        self.message_burst = message_burst
        self.setProtocolOptions(
            maxFramePayloadSize=max_message_size,
            maxMessagePayloadSize=max_message_size,
            autoPingInterval=auto_ping_interval,
            autoPingTimeout=auto_ping_timeout,
            openHandshakeTimeout=open_handshake_timeout,
            closeHandshakeTimeout=5,
            # send the close code (1009 for an oversized message) rather than
            # dropping the TCP connection without a word
            failByDrop=False,
            allowNullOrigin=True,
            # no Autobahn status page (nor its ?redirect=) on a plain GET: 426
            webStatus=False,
        )

    def start_token_checks(self):
        """Every `token_check_interval` seconds, close (1008) the connections
        whose account's token was revoked or rotated since they connected."""
        self._token_check = task.LoopingCall(self._check_tokens)
        self._token_check.clock = self.clock
        self._token_check.start(self.token_check_interval, now=False).addErrback(
            lambda f: self._log.failure("token checks stopped", f)
        )

    def stop_token_checks(self):
        """Stop the token checks."""
        if self._token_check is not None and self._token_check.running:
            self._token_check.stop()

    @defer.inlineCallbacks
    def _check_tokens(self):
        connections = [c for c in self.connections if c._account is not None]
        if not connections:
            return
        try:
            current = yield self.store.token_hashes({c._account.id for c in connections})
        except Exception:
            self._log.failure("checking the tokens of open connections failed")
            return
        for connection in connections:
            account = connection._account
            if account is not None and current.get(account.id) != connection._token_hash:
                self._log.info("closing a connection of {account}: its token was revoked or rotated", account=account.name)
                connection.close_with(CLOSE_POLICY_VIOLATION, "token revoked")

    def close_all(self, timeout: float = 3.0):
        """Deferred: every open connection closed with 1001, those that do not
        finish the closing handshake in `timeout` seconds dropped. From now
        on every handshake is refused (503), even one begun before."""
        self.closing = True
        closing = []
        for connection in list(self.connections):
            timer = self.clock.callLater(timeout, _drop_if_open, connection)
            closed = connection.close_for_shutdown()
            closed.addBoth(lambda _, t=timer: t.active() and t.cancel())
            closing.append(closed)
        return defer.DeferredList(closing)

    def prepare(self, message: dict):
        """Encode and frame `message` once, for many connections."""
        return self.prepareMessage(messages.encode(message))


def _drop_if_open(connection):
    if connection.transport is not None and connection.state != connection.STATE_CLOSED:
        connection.dropConnection(abort=True)

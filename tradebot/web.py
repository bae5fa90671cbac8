"""
The HTTP side: one `Site` whose resource tree carries the websocket at
``/ws/check/premium/``, the webhook ``/webhook/<secret>``, ``/health`` and
``/metrics``; every other path is 404. On this public port ``/health``
answers only the overall status (for a load balancer) and ``/metrics`` is
refused (401), unless the request carries the operator's admin token
(``Authorization: Bearer TOKEN``, `tradebot.serverkeys`); the admin port
(`make_admin_site`) serves both whole, to anyone who can reach it. Access lines are logged without query strings and without a
webhook's secret, so neither a token nor a secret reaches a log. A client must
send each request's line and headers (a websocket's opening handshake) within
a deadline.
"""

import json
from typing import Optional
from importlib import resources

from autobahn.twisted.resource import WebSocketResource
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.http import HTTPChannel
from twisted.web.server import NOT_DONE_YET, Site

from tradebot.alerts import UnknownWebhook
from tradebot.metrics import CONTENT_TYPE_LATEST
from tradebot.serverkeys import thd_admin_token_hash
from tradebot.signaljson import MAX_BODY, BadSignal
from tradebot.tokens import hash_token, token_matches

#: Seconds /health waits for the database before calling it unreachable.
HEALTH_TIMEOUT = 5.0

#: Seconds a client has to send a whole request head, unless the Site is told.
REQUEST_HEAD_TIMEOUT = 10.0


class HeadDeadlineChannel(HTTPChannel):
    """An HTTP channel that drops a client which has not sent a whole request
    head (request line and headers) within `head_timeout` seconds of
    connecting, or of the end of its previous request. Twisted's idle timeout
    starts again with every byte, so a client trickling its request would
    otherwise hold the connection for ever; so would one that sends nothing
    for a minute. Once the head has come, a websocket's handshake is bounded
    by Autobahn's own opening handshake timeout."""

    _log = Logger()
    head_timeout = REQUEST_HEAD_TIMEOUT
    _deadline = None

    def connectionMade(self):
        super().connectionMade()
        self._start_deadline()

    def allHeadersReceived(self):
        self._stop_deadline()
        super().allHeadersReceived()

    def requestDone(self, request):
        if self.persistent:  # before: the next request may already be buffered
            self._start_deadline()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._stop_deadline()
        super().connectionLost(reason)

    def _start_deadline(self):
        self._stop_deadline()
        self._deadline = self.callLater(self.head_timeout, self._too_late)

    def _stop_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_late(self):
        self._deadline = None
        self._log.info(
            "dropping a connection from {peer}: no whole request within {timeout:g} s",
            peer=getattr(self.transport.getPeer(), "host", "?"),
            timeout=self.head_timeout,
        )
        self.transport.abortConnection()


class RedactingSite(Site):
    """A Site that logs each request's method, path (query removed) and
    status, and drops a client slower than `head_timeout` seconds to send a
    request head (`HeadDeadlineChannel`)."""

    _log = Logger()
    noisy = False
    protocol = HeadDeadlineChannel

    def __init__(self, resource, head_timeout: float = REQUEST_HEAD_TIMEOUT, **kwargs):
        super().__init__(resource, **kwargs)
        self.head_timeout = head_timeout

    def buildProtocol(self, addr):
        """A `HeadDeadlineChannel` with this Site's deadline."""
        channel = super().buildProtocol(addr)
        channel.head_timeout = self.head_timeout
        return channel

    def log(self, request):
        path = request.uri.split(b"?", 1)[0].decode("ascii", "replace")
        if path.startswith("/webhook/"):
            path = "/webhook/***"
        self._log.info(
            "{method} {path} {code}",
            method=request.method.decode("ascii", "replace"),
            path=path,
            code=request.code,
        )


class _Branch(Resource):
    """A path segment that is not a page itself: it and its unknown
    children are a plain 404."""

    def getChild(self, path, request):
        return pages.notFound()

    def render(self, request):
        return pages.notFound().render(request)


class _PremiumResource(WebSocketResource):
    """The websocket, on its path alone (with or without the trailing
    slash): anything below it is a 404, like any other unknown path."""

    def render(self, request):
        # A leaf, so it would answer for every path below it too.
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        return super().render(request)


class AdminAuth:
    """Whether a request carries the operator's admin token (``Authorization:
    Bearer TOKEN``, made by ``tradebot admin-token``), checked against the
    hash the store keeps, in constant time."""

    def __init__(self, store=None):
        self.store = store  # None: no token is the admin token

    @staticmethod
    def presented(request) -> Optional[str]:
        """The bearer token of `request`, or None."""
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    async def allows(self, token: Optional[str]) -> bool:
        """True if `token` is the admin token."""
        if token is None or self.store is None:
            return False
        stored = await self.store.run(thd_admin_token_hash)
        return token_matches(token, stored)


def _deny_admin(request) -> bytes:
    request.setResponseCode(401)
    request.setHeader(b"www-authenticate", b'Bearer realm="tradebot admin"')
    request.setHeader(b"content-type", b"application/json")
    return b'{"error": "the admin token is needed: Authorization: Bearer TOKEN (tradebot admin-token)"}'


class HealthCheck:
    """The server's health: the database answers within `HEALTH_TIMEOUT`
    seconds and takes writes, every broker can trade, and no account is
    locked out of its broker (its stored password cannot be decrypted).
    Brokers are named by their opaque names (`tradebot.serverkeys`)."""

    def __init__(self, store, backends, clock):
        self.store = store
        self.backends = backends
        self.clock = clock

    async def report(self) -> dict:
        """``{"parts": {...}, "problems": [...]}``: each part's state, and a
        line for each problem (none: healthy)."""
        parts, problems = {}, []
        try:
            await self.store.ping().addTimeout(HEALTH_TIMEOUT, self.clock)
            fault = self.store.health.fault
            parts["database"] = "ok" if fault is None else f"writes fail: {fault.kind}"
            if fault is not None:
                problems.append(f"database: {parts['database']}")
        except defer.TimeoutError:
            parts["database"] = f"no answer within {HEALTH_TIMEOUT:g} s"
            problems.append(f"database: {parts['database']}")
        except Exception as e:
            parts["database"] = _one_line(e)
            problems.append(f"database: {parts['database']}")
        brokers = {}
        for backend in self.backends.backends:
            if getattr(backend, "available", True):
                brokers[backend.name] = "ok"
            else:
                brokers[backend.name] = getattr(backend, "down_reason", "unavailable")
                problems.append(f"broker {backend.name}: {brokers[backend.name]}")
        parts["brokers"] = brokers
        locked = dict(getattr(self.backends, "locked_accounts", {}))
        if locked:
            parts["accounts"] = locked
            problems += [f"account {name}: {why}" for name, why in sorted(locked.items())]
        return {"parts": parts, "problems": problems}


class HealthResource(Resource):
    """``GET /health``: 200 and ``{"status": "ok", ...}`` when the
    `HealthCheck` finds nothing wrong, 503 and the reasons otherwise.

    Given `admin` (an `AdminAuth`: the public port), the details and reasons
    go only to a request bearing the admin token; anyone else gets the status
    alone, ``{"status": "ok"}`` or ``{"status": "unavailable"}``, with the
    same code. `guard` (a `SecretGuard`) counts a wrong token as a failed
    attempt."""

    isLeaf = True
    _log = Logger()

    def __init__(self, check: HealthCheck, admin: Optional[AdminAuth] = None, guard=None):
        super().__init__()
        self.check = check
        self.admin = admin
        self.guard = guard

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        d = defer.ensureDeferred(self._answer(request))
        d.addErrback(lambda f: self._log.failure("health check failed", f))
        return NOT_DONE_YET

    async def _answer(self, request):
        detailed = True
        if self.admin is not None:
            token = AdminAuth.presented(request)
            try:
                allowed = defer.ensureDeferred(self.admin.allows(token))
                detailed = await allowed.addTimeout(HEALTH_TIMEOUT, self.check.clock)
            except Exception:  # the database is down: the report will say so
                detailed = False
            if token is not None and not detailed and self.guard is not None:
                await self.guard.failed(request)  # a wrong token is a failed attempt
        report = await self.check.report()
        problems = report["problems"]
        request.setResponseCode(503 if problems else 200)
        body = {"status": "unavailable" if problems else "ok"}
        if detailed:
            body.update(report["parts"])
            if problems:
                body["reasons"] = problems
        if not request.finished and not request._disconnected:
            request.write(json.dumps(body).encode())
            request.finish()


def _one_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


class MetricsResource(Resource):
    """``GET /metrics``: every metric in Prometheus's text format. Given
    `admin` (an `AdminAuth`: the public port), only to a request bearing the
    admin token; 401 otherwise."""

    isLeaf = True
    _log = Logger()

    def __init__(self, metrics, admin: Optional[AdminAuth] = None, guard=None):
        super().__init__()
        self.metrics = metrics
        self.admin = admin
        self.guard = guard

    def render_GET(self, request):
        request.setHeader(b"cache-control", b"no-store")
        if self.admin is None:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return self.metrics.render()
        d = defer.ensureDeferred(self._answer(request))
        d.addErrback(lambda f: self._log.failure("a metrics request failed", f))
        return NOT_DONE_YET

    async def _answer(self, request):
        token = AdminAuth.presented(request)
        try:
            allowed = await self.admin.allows(token)
        except Exception:
            self._log.failure("the admin token could not be checked")
            request.setResponseCode(503)
            body = b'{"error": "unavailable"}'
        else:
            if allowed:
                request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
                body = self.metrics.render()
            else:
                if token is not None and self.guard is not None:
                    await self.guard.failed(request)
                body = _deny_admin(request)
        if not request.finished and not request._disconnected:
            request.write(body)
            request.finish()


#: The dashboard's files: served name -> (package file, content type).
_DASHBOARD_FILES = {
    b"app.js": ("app.js", b"text/javascript; charset=utf-8"),
    b"app.css": ("app.css", b"text/css; charset=utf-8"),
}
_PAGE_HEADERS = {
    b"content-security-policy": b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}


def _dashboard_file(name: str) -> bytes:
    return resources.files("tradebot.dashboard").joinpath(name).read_bytes()


class _StaticFile(Resource):
    """One file of the dashboard, read once, with its content type."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes):
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request):
        request.setHeader(b"content-type", self.content_type)
        for name, value in _PAGE_HEADERS.items():
            request.setHeader(name, value)
        return self.body


class SecretGuard:
    """What a resource taking a secret (an API token, a webhook secret) does
    with the gatekeeper of the websocket: an address locked out after failing
    too often is refused (429) before its secret is even looked at, and each
    wrong secret counts as a failure, answered after the gatekeeper's delay."""

    def __init__(self, gatekeeper=None, clock=None):
        self.gatekeeper = gatekeeper
        self.clock = clock

    def address(self, request) -> Optional[str]:
        if self.gatekeeper is None:
            return None
        forwarded = request.getHeader(b"x-forwarded-for")
        return self.gatekeeper.client_ip(
            request.getClientAddress().host, forwarded.decode("latin-1") if forwarded else None
        )

    def locked_out(self, request) -> bool:
        """True (and the 429 set on `request`) if its address is locked out."""
        ip = self.address(request)
        if ip is None or not self.gatekeeper.locked(ip):
            return False
        request.setResponseCode(429)
        request.setHeader(b"retry-after", b"600")
        return True

    def failed(self, request):
        """Deferred: fires when the answer to a wrong secret may be sent."""
        ip = self.address(request)
        delay = self.gatekeeper.failed(ip) if ip is not None else 0.0
        if not delay:
            return defer.succeed(None)
        return task.deferLater(self.clock, delay, lambda: None)


TOO_MANY_FAILURES = b'{"error": "too many failed attempts from this address; try again later"}'


class TradesResource(Resource):
    """``GET /api/trades``: the account of the bearer token (``Authorization:
    Bearer TOKEN``, never in the URL), its last trades, oldest first, and its
    equity curve (the balance after each closed trade, from the balance before
    the first). 401 without a live token."""

    isLeaf = True
    _log = Logger()
    LIMIT = 500

    def __init__(self, store, gatekeeper=None, clock=None):
        super().__init__()
        self.store = store
        self.guard = SecretGuard(gatekeeper, clock)

    def render_GET(self, request):
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-type", b"application/json")
        if self.guard.locked_out(request):
            return TOO_MANY_FAILURES
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized(request)
        d = defer.ensureDeferred(self._report(token.strip()))

        async def _wrong_token(report):
            if report is None:
                await self.guard.failed(request)
            return report

        def _answer(report):
            if request.finished or request._disconnected:
                return
            if report is None:
                request.write(self._unauthorized(request))
            else:
                request.write(json.dumps(report).encode())
            request.finish()

        d.addCallback(lambda report: defer.ensureDeferred(_wrong_token(report)))

        def _failed(failure):
            self._log.failure("the trades of an account could not be read", failure)
            if not request.finished and not request._disconnected:
                request.setResponseCode(503)
                request.write(b'{"error": "unavailable"}')
                request.finish()

        d.addCallbacks(_answer, _failed)
        return NOT_DONE_YET

    @staticmethod
    def _unauthorized(request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="tradebot"')
        return b'{"error": "a valid account token is needed: Authorization: Bearer TOKEN"}'

    async def _report(self, token: str):
        account = await self.store.account_by_token_hash(hash_token(token))
        if account is None or not token_matches(token, account.token_hash):
            return None
        rows = [t for _, t in await self.store.trades(account_name=account.name)][-self.LIMIT:]
        trades = [_trade_json(t) for t in rows]
        closed = [t for t in rows if t.status == "closed" and t.balance_after is not None]
        equity = []
        if closed:
            first = closed[0]
            equity.append({"time": first.opened_at, "balance": float(first.balance_after - first.profit)})
            equity += [{"time": t.closed_at, "balance": float(t.balance_after)} for t in closed]
        return {
            "account": {
                "name": account.name,
                "symbols": list(account.symbols),
                "phase": account.phase,
                "step": account.step,
                "balance": float(account.balance),
            },
            "trades": trades,
            "equity": equity,
        }


class WebhookResource(Resource):
    """``POST /webhook/<secret>``: queue the alert in the JSON body for the
    accounts subscribed to the secret (`tradebot.alerts`). 202 and
    ``{"status": "queued", ...}`` when queued; 404 for a secret nobody is
    subscribed to, 400 and ``{"error": ...}`` for a body that is not an alert
    (nothing is queued then); 405 for another method; 503 if the database
    fails."""

    isLeaf = True
    _log = Logger()

    def __init__(self, alerts, gatekeeper=None, clock=None):
        super().__init__()
        self.alerts = alerts
        self.guard = SecretGuard(gatekeeper, clock)

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return self._error(request, 405, "POST an alert")
        return super().render(request)

    def render_POST(self, request):
        if self.guard.locked_out(request):
            return TOO_MANY_FAILURES
        if len(request.postpath) != 1 or not request.postpath[0]:
            return self._error(request, 404, "unknown webhook")
        secret = request.postpath[0].decode("utf-8", "replace")
        body = request.content.read(MAX_BODY + 1)
        d = defer.ensureDeferred(self.alerts.receive(secret, body))

        def _answer(queued):
            request.setResponseCode(202)
            return json.dumps(
                {
                    "status": "queued",
                    "symbol": queued.symbol,
                    "action": queued.side,
                    "accounts": len(queued.alerts),
                    "expires_at": queued.expires_at,
                }
            ).encode()

        def _refused(failure):
            if failure.check(UnknownWebhook):
                answer = self._error(request, 404, "unknown webhook")
                return self.guard.failed(request).addCallback(lambda _: answer)
            if failure.check(BadSignal):
                return self._error(request, 400, failure.getErrorMessage())
            self._log.failure("a webhook alert could not be queued", failure)
            return self._error(request, 503, "unavailable, try again")

        def _send(body):
            if not request.finished and not request._disconnected:
                request.write(body)
                request.finish()

        d.addCallbacks(_answer, _refused).addCallback(_send)
        d.addErrback(lambda f: self._log.failure("a webhook answer could not be sent", f))
        return NOT_DONE_YET

    @staticmethod
    def _error(request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        return json.dumps({"error": text}).encode()


def _trade_json(trade) -> dict:
    number = lambda v: None if v is None else float(v)  # noqa: E731
    return {
        "id": trade.id,
        "symbol": trade.symbol,
        "side": trade.side,
        "status": trade.status,
        "lot_size": number(trade.lot_size),
        "open_price": number(trade.open_price),
        "close_price": number(trade.close_price),
        "stop_loss": number(trade.stop_loss),
        "take_profit": number(trade.take_profit),
        "profit": number(trade.profit),
        "result": trade.result,
        "close_reason": trade.close_reason,
        "balance_after": number(trade.balance_after),
        "phase_after": trade.phase_after,
        "step_after": trade.step_after,
        "opened_at": trade.opened_at,
        "closed_at": trade.closed_at,
        "error": trade.error,
    }


def make_site(websocket_factory, health=None, metrics=None, store=None, alerts=None) -> Site:
    """The server's Site: the premium websocket, with or without its trailing
    slash, `health` at /health and `metrics` at /metrics when given (guarded
    by the admin token: make them with an `AdminAuth`), the dashboard at /
    with its files under /static/ and, given the `store`, its API at
    /api/trades, and given `alerts` (an `AlertQueue`) the webhook at
    /webhook/<secret>; 404 elsewhere. A request head must come within the
    websocket's opening handshake timeout."""
    root = _Branch()
    root.putChild(b"", _StaticFile(_dashboard_file("index.html"), b"text/html; charset=utf-8"))
    static = _Branch()
    root.putChild(b"static", static)
    for served, (name, content_type) in _DASHBOARD_FILES.items():
        static.putChild(served, _StaticFile(_dashboard_file(name), content_type))
    if store is not None:
        api = _Branch()
        root.putChild(b"api", api)
        api.putChild(b"trades", TradesResource(store, websocket_factory.gatekeeper, websocket_factory.clock))
    if alerts is not None:
        root.putChild(b"webhook", WebhookResource(alerts, websocket_factory.gatekeeper, websocket_factory.clock))
    ws = _Branch()
    check = _Branch()
    root.putChild(b"ws", ws)
    ws.putChild(b"check", check)
    check.putChild(b"premium", _PremiumResource(websocket_factory))
    admin = AdminAuth(store)
    guard = SecretGuard(websocket_factory.gatekeeper, websocket_factory.clock)
    if health is not None:
        root.putChild(b"health", HealthResource(health, admin=admin, guard=guard))
    if metrics is not None:
        root.putChild(b"metrics", MetricsResource(metrics, admin=admin, guard=guard))
    return RedactingSite(root, head_timeout=websocket_factory.openHandshakeTimeout)


def make_admin_site(health: HealthCheck, metrics, head_timeout: float = REQUEST_HEAD_TIMEOUT) -> Site:
    """A Site of its own for /health and /metrics (the admin port): both
    whole, with no token asked (bind it where only the operator reaches)."""
    root = _Branch()
    root.putChild(b"health", HealthResource(health))
    root.putChild(b"metrics", MetricsResource(metrics))
    return RedactingSite(root, head_timeout=head_timeout)

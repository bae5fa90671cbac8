"""
The HTTP side: one `Site` whose resource tree carries the websocket at
``/ws/check/premium/``, the webhook ``/webhook/<secret>``, ``/health`` and
``/metrics``; every other path is 404. On this public port ``/health``
answers only the overall status (for a load balancer) and ``/metrics`` is
refused (401), unless the request carries the operator's admin token
(``Authorization: Bearer TOKEN``, `tradebot.store.serverkeys`); the admin port
(`make_admin_site`) serves both whole, to anyone who can reach it.

Both Sites are `tradebot.server.httpguard.GuardedSite`s: connections counted per
address, each request due whole within a deadline, bodies refused by route
before they are read, and an access log with neither tokens nor secrets.
Resources taking a secret check it first and never refuse a right one
(`SecretGuard`); the API and each webhook are rate-limited per token and per
secret.
"""

import json
from importlib import resources
from typing import Optional

from autobahn.twisted.resource import WebSocketResource
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tradebot.server.addresses import RecentEvents
from tradebot.server.httpguard import REQUEST_TIMEOUT, GuardedSite
from tradebot.server.metrics import CONTENT_TYPE_LATEST
from tradebot.signals.signaljson import MAX_BODY, BadSignal
from tradebot.store.db import thd_trades_page
from tradebot.store.serverkeys import thd_admin_token_hash
from tradebot.store.tokens import hash_token, token_matches
from tradebot.trading.alerts import UnknownWebhook

#: Seconds /health waits for the database before calling it unreachable.
HEALTH_TIMEOUT = 5.0

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


#: Seconds a close may keep being refused before /health calls it a problem.
CLOSING_ALARM = 60.0


class HealthCheck:
    """The server's health: the database answers within `HEALTH_TIMEOUT`
    seconds and takes writes, every broker can trade, no account is locked
    out of its broker (its stored password cannot be decrypted), and no
    trade has been waiting more than `CLOSING_ALARM` seconds for a close the
    broker keeps refusing (`sessions`, a `SessionManager`: every close still
    being retried is listed under ``"closing"``). Brokers are named by their
    opaque names (`tradebot.store.serverkeys`)."""

    def __init__(self, store, backends, clock, sessions=None):
        self.store = store
        self.backends = backends
        self.clock = clock
        self.sessions = sessions

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
        closing = self._closing()
        if closing:
            parts["closing"] = closing
            now = self.clock.seconds()
            problems += [
                f"account {name}: trade {c['trade_id']} not closed after {c['attempts']} tries "
                f"({c['last_error']})"
                for name, entries in sorted(closing.items())
                for c in entries
                if now - c["since"] > CLOSING_ALARM
            ]
        return {"parts": parts, "problems": problems}

    def _closing(self) -> dict:
        """Account name -> the closes its session is still retrying."""
        found = {}
        for session in getattr(self.sessions, "sessions", {}).values():
            entries = [
                {"trade_id": trade_id, "why": c.why, "since": c.since, "attempts": c.attempts, "last_error": c.last_error}
                for trade_id, c in sorted(session.closing.items())
            ]
            if entries:
                found[session.account.name] = entries
        return found


class HealthResource(Resource):
    """``GET /health``: 200 and ``{"status": "ok", ...}`` when the
    `HealthCheck` finds nothing wrong, 503 and the reasons otherwise.

    Given `admin` (an `AdminAuth`: the public port), the details and reasons
    go only to a request bearing the admin token; anyone else gets the status
    alone, ``{"status": "ok"}`` or ``{"status": "unavailable"}``, with the
    same code (a wrong token gains nothing here, so it is not counted)."""

    isLeaf = True
    _log = Logger()

    def __init__(self, check: HealthCheck, admin: Optional[AdminAuth] = None):
        super().__init__()
        self.check = check
        self.admin = admin

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
    admin token; 401 otherwise (429 from an address locked out by `guard`,
    a `SecretGuard`, after too many wrong ones)."""

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
            elif token is not None and self.guard is not None and await self.guard.wrong(request):
                body = TOO_MANY_FAILURES  # this address is locked out
            else:
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
    # 'self' covers the same-origin ws:/wss: (CSP Level 3, every current browser)
    b"content-security-policy": b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}


def _dashboard_file(name: str) -> bytes:
    return resources.files("tradebot.server.dashboard").joinpath(name).read_bytes()


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
    """What a resource taking a secret (an API token, a webhook secret, the
    admin token) does with the gatekeeper of the websocket. The secret is
    looked at first, and a right one is never refused: 192 random bits are
    not guessed, and alert senders such as TradingView post for many
    customers from a few shared addresses. A wrong one counts as a failure of
    its address (wrong webhook secrets on a table of their own, so they shut
    nobody out of the websocket or the API) and is answered after the
    gatekeeper's delay, or at once with 429 while the address is locked out."""

    def __init__(self, gatekeeper=None, clock=None, webhook: bool = False):
        self.gatekeeper = gatekeeper
        self.clock = clock
        self.webhook = webhook

    def address(self, request) -> Optional[str]:
        """The client's address (through trusted proxies), or None without a gatekeeper."""
        if self.gatekeeper is None:
            return None
        forwarded = request.getHeader(b"x-forwarded-for")
        return self.gatekeeper.client_ip(
            request.getClientAddress().host, forwarded.decode("latin-1") if forwarded else None
        )

    async def wrong(self, request) -> bool:
        """A wrong secret came with `request`: True (the 429 set on it) if its
        address is locked out, else False once the failure's delay is over."""
        ip = self.address(request)
        if ip is None:
            return False
        gate = self.gatekeeper
        locked = gate.webhook_locked(ip) if self.webhook else gate.locked(ip)
        if locked:
            request.setResponseCode(429)
            request.setHeader(b"retry-after", b"600")
            return True
        delay = gate.webhook_failed(ip) if self.webhook else gate.failed(ip)
        if delay:
            await task.deferLater(self.clock, delay, lambda: None)
        return False


TOO_MANY_FAILURES = b'{"error": "too many failed attempts from this address; try again later"}'


#: Calls a minute one token may make to /api/trades, and one webhook's alerts a minute.
API_RATE = 30
WEBHOOK_RATE = 60


def _answer_json(request, code: int, body) -> None:
    """Write `body` (a dict, or bytes) with `code`, unless the client left."""
    if request.finished or request._disconnected:
        return
    request.setResponseCode(code)
    request.write(body if isinstance(body, bytes) else json.dumps(body).encode())
    request.finish()


class TradesResource(Resource):
    """``GET /api/trades[?before=ID][&limit=N]``: the account of the bearer
    token (``Authorization: Bearer TOKEN``, never in the URL), a page of its
    trades (the last `limit`, at most and by default `LIMIT`, with ids below
    `before` if given; oldest first), ``next_before`` (pass it as ``before``
    for the page before this one; null at the first trade) and the equity
    curve of the page (the balance after each closed trade, from the balance
    before the first). The database reads that page alone, by id. 401
    without a live token; 429 past `API_RATE` calls a minute of one account,
    or from an address locked out after wrong tokens; 400 for a bad
    parameter."""

    isLeaf = True
    _log = Logger()
    LIMIT = 500

    def __init__(self, store, gatekeeper=None, clock=None):
        super().__init__()
        self.store = store
        self.guard = SecretGuard(gatekeeper, clock)
        self.clock = clock
        self._calls = RecentEvents(API_RATE, 60.0, capacity=100000)

    def render_GET(self, request):
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-type", b"application/json")
        try:
            before = _whole(request, b"before", None)
            limit = min(_whole(request, b"limit", self.LIMIT), self.LIMIT)
        except ValueError as e:
            request.setResponseCode(400)
            return json.dumps({"error": str(e)}).encode()
        token = AdminAuth.presented(request)
        if token is None:
            return self._unauthorized(request)
        d = defer.ensureDeferred(self._answer(request, token, before, limit))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _answer(self, request, token: str, before: Optional[int], limit: int) -> None:
        account = await self.store.account_by_token_hash(hash_token(token))
        if account is None or not token_matches(token, account.token_hash):
            if await self.guard.wrong(request):
                return _answer_json(request, 429, TOO_MANY_FAILURES)
            return _answer_json(request, 401, self._unauthorized(request))
        now = self.clock.seconds() if self.clock is not None else 0.0
        if self._calls.count(account.id, now) >= API_RATE:
            request.setHeader(b"retry-after", b"60")
            return _answer_json(request, 429, {"error": f"at most {API_RATE} calls a minute per account"})
        self._calls.add(account.id, now)
        rows = await self.store.run(thd_trades_page, account.id, before, limit)
        _answer_json(request, 200, _report(account, rows, full=len(rows) == limit))

    def _failed(self, failure, request):
        self._log.failure("the trades of an account could not be read", failure)
        _answer_json(request, 503, b'{"error": "unavailable"}')

    @staticmethod
    def _unauthorized(request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="tradebot"')
        return b'{"error": "a valid account token is needed: Authorization: Bearer TOKEN"}'


def _whole(request, name: bytes, default):
    """The query parameter `name` as a whole number from 1; `default` if absent."""
    values = request.args.get(name)
    if not values:
        return default
    text = values[-1].decode("ascii", "replace")
    if not text.isdigit() or len(text) > 12 or int(text) < 1:
        raise ValueError(f"{name.decode()} must be a whole number from 1")
    return int(text)


def _report(account, rows, full: bool) -> dict:
    """The /api/trades answer for one page of `rows` (oldest first; `full`:
    as many as were asked for, so older ones may exist)."""
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
        "trades": [_trade_json(t) for t in rows],
        "next_before": rows[0].id if full and rows else None,
        "equity": equity,
    }


class WebhookResource(Resource):
    """``POST /webhook/<secret>``: queue the alert in the JSON body for the
    accounts subscribed to the secret (`tradebot.trading.alerts`). 202 and
    ``{"status": "queued", ...}`` when queued; 404 for a secret nobody is
    subscribed to (429 at once from an address that sent too many of those:
    a right secret is never refused); 429 past `WEBHOOK_RATE` alerts a
    minute on one secret; 400 and ``{"error": ...}`` for a body that is not
    an alert (nothing is queued then); 405 for another method; 503 if the
    database fails. The body's size is bounded before it is read
    (`tradebot.server.httpguard`)."""

    isLeaf = True
    _log = Logger()

    def __init__(self, alerts, gatekeeper=None, clock=None):
        super().__init__()
        self.alerts = alerts
        self.guard = SecretGuard(gatekeeper, clock, webhook=True)
        self.clock = clock
        self._calls = RecentEvents(WEBHOOK_RATE, 60.0, capacity=100000)

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return self._error(request, 405, "POST an alert")
        return super().render(request)

    def render_POST(self, request):
        if len(request.postpath) != 1 or not request.postpath[0]:
            return self._error(request, 404, "unknown webhook")
        secret = request.postpath[0].decode("utf-8", "replace")
        body = request.content.read(MAX_BODY + 1)
        d = defer.ensureDeferred(self._answer(request, secret, body))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _answer(self, request, secret: str, body: bytes) -> None:
        try:
            subscribers = await self.alerts.subscribers(secret)
        except UnknownWebhook:
            if await self.guard.wrong(request):
                return _answer_json(request, 429, TOO_MANY_FAILURES)
            return _answer_json(request, 404, {"error": "unknown webhook"})
        key = hash_token(secret)
        now = self.clock.seconds() if self.clock is not None else 0.0
        if self._calls.count(key, now) >= WEBHOOK_RATE:
            request.setHeader(b"retry-after", b"60")
            return _answer_json(request, 429, {"error": f"at most {WEBHOOK_RATE} alerts a minute on one webhook"})
        self._calls.add(key, now)
        try:
            queued = await self.alerts.queue_for(subscribers, body)
        except BadSignal as e:
            return _answer_json(request, 400, {"error": str(e)})
        _answer_json(
            request,
            202,
            {
                "status": "queued",
                "symbol": queued.symbol,
                "action": queued.side,
                "accounts": len(queued.alerts),
                "expires_at": queued.expires_at,
            },
        )

    def _failed(self, failure, request):
        self._log.failure("a webhook alert could not be queued", failure)
        _answer_json(request, 503, {"error": "unavailable, try again"})

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
        root.putChild(b"health", HealthResource(health, admin=admin))
    if metrics is not None:
        root.putChild(b"metrics", MetricsResource(metrics, admin=admin, guard=guard))
    return GuardedSite(root, head_timeout=websocket_factory.openHandshakeTimeout, gatekeeper=websocket_factory.gatekeeper)


def make_admin_site(health: HealthCheck, metrics, head_timeout: float = REQUEST_TIMEOUT) -> Site:
    """A Site of its own for /health and /metrics (the admin port): both
    whole, with no token asked (bind it where only the operator reaches)."""
    root = _Branch()
    root.putChild(b"health", HealthResource(health))
    root.putChild(b"metrics", MetricsResource(metrics))
    return GuardedSite(root, head_timeout=head_timeout)

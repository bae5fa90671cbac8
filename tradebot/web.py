"""
The HTTP side: one `Site` whose resource tree carries the websocket at
``/ws/check/premium/`` and, unless they have an admin port of their own,
``/health`` and ``/metrics``; every other path is 404. Access lines are logged
without query strings, so a token never reaches a log.
"""

import json

from autobahn.twisted.resource import WebSocketResource
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tradebot.metrics import CONTENT_TYPE_LATEST

#: Seconds /health waits for the database before calling it unreachable.
HEALTH_TIMEOUT = 5.0


class RedactingSite(Site):
    """A Site that logs each request's method, path (query removed) and status."""

    _log = Logger()
    noisy = False

    def log(self, request):
        path = request.uri.split(b"?", 1)[0].decode("ascii", "replace")
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


class HealthResource(Resource):
    """``GET /health``: 200 and ``{"status": "ok", ...}`` when the database
    answers within `HEALTH_TIMEOUT` seconds and every broker can trade; 503
    and the reasons otherwise."""

    isLeaf = True
    _log = Logger()

    def __init__(self, store, backends, clock):
        super().__init__()
        self.store = store
        self.backends = backends
        self.clock = clock

    def render_GET(self, request):
        d = defer.ensureDeferred(self._check())

        def _answer(report):
            problems = report["problems"]
            request.setResponseCode(503 if problems else 200)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            body = {"status": "unavailable" if problems else "ok", **report["parts"]}
            if problems:
                body["reasons"] = problems
            if not request.finished and not request._disconnected:
                request.write(json.dumps(body).encode())
                request.finish()

        d.addCallback(_answer)
        d.addErrback(lambda f: self._log.failure("health check failed", f))
        return NOT_DONE_YET

    async def _check(self) -> dict:
        parts, problems = {}, []
        try:
            await self.store.ping().addTimeout(HEALTH_TIMEOUT, self.clock)
            parts["database"] = "ok"
        except defer.TimeoutError:
            parts["database"] = f"no answer within {HEALTH_TIMEOUT:g} s"
            problems.append(f"database: {parts['database']}")
        except Exception as e:
            parts["database"] = _one_line(e)
            problems.append(f"database: {parts['database']}")
        brokers = {}
        for backend in self.backends.backends:
            if getattr(backend, "available", True):
                brokers[backend.url] = "ok"
            else:
                brokers[backend.url] = getattr(backend, "down_reason", "unavailable")
                problems.append(f"broker {backend.url}: {brokers[backend.url]}")
        parts["brokers"] = brokers
        return {"parts": parts, "problems": problems}


def _one_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


class MetricsResource(Resource):
    """``GET /metrics``: every metric in Prometheus's text format."""

    isLeaf = True

    def __init__(self, metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.render()


def make_site(websocket_factory, health=None, metrics=None) -> Site:
    """The server's Site: the premium websocket, with or without its trailing
    slash, `health` at /health and `metrics` at /metrics when given, and 404
    elsewhere."""
    root = _Branch()
    ws = _Branch()
    check = _Branch()
    root.putChild(b"ws", ws)
    ws.putChild(b"check", check)
    check.putChild(b"premium", _PremiumResource(websocket_factory))
    _add_admin(root, health, metrics)
    return RedactingSite(root)


def make_admin_site(health, metrics) -> Site:
    """A Site of its own for /health and /metrics (the admin port)."""
    root = _Branch()
    _add_admin(root, health, metrics)
    return RedactingSite(root)


def _add_admin(root, health, metrics) -> None:
    if health is not None:
        root.putChild(b"health", health)
    if metrics is not None:
        root.putChild(b"metrics", MetricsResource(metrics))

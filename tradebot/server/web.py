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


from autobahn.twisted.resource import WebSocketResource
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import Site

from tradebot.server.api import TradesResource, WebhookResource
from tradebot.server.guards import AdminAuth, SecretGuard
from tradebot.server.health import HealthCheck, HealthResource, MetricsResource
from tradebot.server.httpguard import REQUEST_TIMEOUT, GuardedSite
from tradebot.server.pages import _DASHBOARD_FILES, _dashboard_file, _StaticFile


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

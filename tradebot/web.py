"""
The HTTP side: one `Site` whose resource tree carries the websocket at
``/ws/check/premium/``; every other path is 404. Access lines are logged
without query strings, so a token never reaches a log.
"""

from autobahn.twisted.resource import WebSocketResource
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import Site


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


def make_site(websocket_factory) -> Site:
    """The server's Site: the premium websocket, with or without its trailing
    slash, and 404 elsewhere."""
    root = _Branch()
    ws = _Branch()
    check = _Branch()
    root.putChild(b"ws", ws)
    ws.putChild(b"check", check)
    check.putChild(b"premium", _PremiumResource(websocket_factory))
    return RedactingSite(root)

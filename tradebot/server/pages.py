"""
The web dashboard's files, served with their content types and a strict
content security policy.
"""

from importlib import resources

from twisted.web.resource import Resource

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

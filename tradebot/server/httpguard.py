"""
The plain-HTTP side of the public port, kept within bounds before any
resource runs: `GuardedSite` and its `GuardedChannel`.

- **Connections per address.** Every TCP connection (plain HTTP or, later, a
  websocket) counts against its address's share (`Gatekeeper.http_opened`,
  IPv6 by /64); past it the connection gets 429 and is closed at once. A
  trusted proxy's connections are not counted per peer: behind it, the
  websocket's own limits count the forwarded address.
- **A deadline on the whole request.** A client has `head_timeout` seconds,
  from connecting or from the end of its previous request, to send its whole
  request: line, headers *and* body. Twisted's idle timer restarts with every
  byte, so without it one byte every few seconds holds a connection for ever.
  A websocket's opening handshake has no body, so once its head is in,
  Autobahn's own handshake timeout takes over.
- **Bodies by route.** What a request may carry is decided when its headers
  are in, from its method and its route, decoded as the resources will route
  it (`route`): the webhook takes a body up to `MAX_BODY` bytes, another POST,
  PUT or PATCH up to `SMALL_BODY`, anything else none. A ``Content-Length``
  over the limit is answered 413 at once, without reading the body; a chunked
  body where none may come is answered 411; a chunked webhook body is counted
  as it arrives and answered 413 the moment it passes the limit. Nothing of a
  refused body is kept: Twisted would otherwise buffer it whole (on disk past
  100 KB) before any resource could say no.
- **An access log without secrets.** Each request is logged by its method,
  its route (the decoded path, without the query string or the scheme and
  host of an absolute-form request line, every segment after a ``webhook``
  segment replaced by ``***``) and its status.
"""

from typing import List, Optional
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from tradebot.signals.signaljson import MAX_BODY

#: Seconds a client has to send a whole request, unless the Site is told.
REQUEST_TIMEOUT = 10.0
#: The body of a POST, PUT or PATCH elsewhere than the webhook, at most.
SMALL_BODY = 4096
_BODY_METHODS = (b"POST", b"PUT", b"PATCH")

_REASONS = {
    411: b"Length Required",
    413: b"Content Too Large",
    429: b"Too Many Requests",
}


def route(path: bytes) -> List[bytes]:
    """The path segments of a request target as the resource tree sees them:
    the query string removed, the scheme and host of an absolute-form target
    removed, each segment percent-decoded."""
    path = path.split(b"?", 1)[0]
    if b"://" in path.split(b"/", 1)[0] + b"/":  # absolute form: scheme://host/path
        after = path.split(b"://", 1)[1]
        path = b"/" + after.split(b"/", 1)[1] if b"/" in after else b"/"
    return [unquote_to_bytes(segment) for segment in path.split(b"/")[1:]]


def shown_route(path: bytes) -> str:
    """The route of `path` as the access log shows it: decoded, and every
    segment after a ``webhook`` segment (any case) replaced by ``***``."""
    segments = route(path)
    for index, segment in enumerate(segments):
        if segment.lower() == b"webhook":
            segments = segments[: index + 1] + [b"***"] * min(1, len(segments) - index - 1)
            break
    return "/" + "/".join(s.decode("utf-8", "replace") for s in segments)


def body_limit(method: bytes, path: bytes) -> int:
    """The bytes of body a request may carry on this route."""
    segments = route(path)
    if method == b"POST" and segments[:1] == [b"webhook"]:
        return MAX_BODY
    if method in _BODY_METHODS:
        return SMALL_BODY
    return 0


def may_be_chunked(method: bytes, path: bytes) -> bool:
    """Whether a chunked body (no Content-Length) is taken on this route."""
    return method == b"POST" and route(path)[:1] == [b"webhook"]


class GuardedRequest(Request):
    """A request whose body is counted as it arrives, against the limit its
    channel set for it."""

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.body_arrived(len(data)):
            super().handleContentChunk(data)


class GuardedChannel(HTTPChannel):
    """An HTTP channel that counts its connection against its address, gives
    its client `head_timeout` seconds per whole request, and refuses a body
    its route does not take (see the module docstring)."""

    _log = Logger()
    head_timeout = REQUEST_TIMEOUT
    _deadline = None
    _counted: Optional[str] = None  # the address this connection counts against
    _refused = False
    _body_room = 0

    # A websocket takes the connection over by setting the channel's
    # transport to None (autobahn.twisted.resource.WebSocketResource.render);
    # the channel then never hears connectionLost, so that is where the
    # plain-HTTP connection stops counting (the websocket's own limits count
    # it from there on).
    @property
    def transport(self):
        return self.__dict__.get("transport")

    @transport.setter
    def transport(self, value):
        if value is None and self._counted is not None:
            self.site.gatekeeper.http_closed(self._counted)
            self._counted = None
        self.__dict__["transport"] = value

    def connectionMade(self):
        super().connectionMade()
        gatekeeper = getattr(self.site, "gatekeeper", None)
        if gatekeeper is not None:
            peer = getattr(self.transport.getPeer(), "host", None)
            if peer is not None and not gatekeeper.http_opened(peer):
                self.refuse(429, b"too many connections from this address")
                return
            self._counted = peer
        self._start_deadline()

    def connectionLost(self, reason):
        self._stop_deadline()
        if self._counted is not None:
            self.site.gatekeeper.http_closed(self._counted)
            self._counted = None
        super().connectionLost(reason)

    def dataReceived(self, data):
        if self._refused:
            return  # answered and closing: nothing more is read
        super().dataReceived(data)

    def allHeadersReceived(self):
        method, path = self._command, self._path
        limit = body_limit(method, path)
        if self.length is None:  # chunked: its size is known only as it comes
            if not may_be_chunked(method, path):
                self.refuse(411, b"a body here must give its Content-Length")
                return
        elif self.length > limit:
            self.refuse(413, b"the body is larger than this path takes" if limit else b"no body is taken here")
            return
        self._body_room = limit
        super().allHeadersReceived()

    def body_arrived(self, size: int) -> bool:
        """A piece of the body arrived; False (and the request refused) once
        the body has passed its limit."""
        if self._refused:
            return False
        self._body_room -= size
        if self._body_room < 0:
            self.refuse(413, b"the body is larger than this path takes")
            return False
        return True

    def allContentReceived(self):
        if self._refused:
            return
        self._stop_deadline()
        super().allContentReceived()

    def requestDone(self, request):
        if self.persistent:  # before: the next request may already be buffered
            self._start_deadline()
        super().requestDone(request)

    def refuse(self, code: int, why: bytes) -> None:
        """Answer `code` with `why` (JSON) at once, read nothing more and close."""
        if self._refused:
            return
        self._refused = True
        self._stop_deadline()
        body = b'{"error": "' + why + b'"}'
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (code, _REASONS[code], len(body), body)
        )
        self._log.info(
            "refused a request from {peer}: {code} {why}",
            peer=getattr(self.transport.getPeer(), "host", "?"),
            code=code,
            why=why.decode(),
        )
        self.transport.loseConnection()

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


class GuardedSite(Site):
    """A Site of `GuardedChannel`s: each request due whole within
    `head_timeout` seconds, bodies by route, connections counted per address
    by `gatekeeper` (a `tradebot.server.limits.Gatekeeper`, if given), and an access
    log with neither query strings nor webhook secrets."""

    _log = Logger()
    noisy = False
    protocol = GuardedChannel
    requestFactory = GuardedRequest

    def __init__(self, resource, head_timeout: float = REQUEST_TIMEOUT, gatekeeper=None, **kwargs):
        super().__init__(resource, **kwargs)
        self.head_timeout = head_timeout
        self.gatekeeper = gatekeeper

    def buildProtocol(self, addr):
        """A `GuardedChannel` with this Site's deadline."""
        channel = super().buildProtocol(addr)
        channel.head_timeout = self.head_timeout
        return channel

    def log(self, request):
        self._log.info(
            "{method} {path} {code}",
            method=request.method.decode("ascii", "replace"),
            path=shown_route(request.uri),
            code=request.code,
        )

"""
Who may read what on the HTTP side: the operator's admin token (`AdminAuth`),
and `SecretGuard`, which checks a secret first, never refuses a right one,
and counts a wrong one against its address.
"""

import json
from typing import Optional

from twisted.internet import task

from tradebot.store.serverkeys import thd_admin_token_hash
from tradebot.store.tokens import token_matches


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


def _answer_json(request, code: int, body) -> None:
    """Write `body` (a dict, or bytes) with `code`, unless the client left."""
    if request.finished or request._disconnected:
        return
    request.setResponseCode(code)
    request.write(body if isinstance(body, bytes) else json.dumps(body).encode())
    request.finish()

"""
The account API and the webhook: ``GET /api/trades`` (a page of trades by id,
rate-limited per account) and ``POST /webhook/<secret>`` (an alert queued for
the subscribed accounts, rate-limited per secret).
"""

import json
from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tradebot.server.addresses import RecentEvents
from tradebot.server.guards import TOO_MANY_FAILURES, AdminAuth, SecretGuard, _answer_json
from tradebot.signals.signaljson import MAX_BODY, BadSignal
from tradebot.store.db import thd_trades_page
from tradebot.store.tokens import hash_token, token_matches
from tradebot.trading.alerts import UnknownWebhook

#: Calls a minute one token may make to /api/trades, and one webhook's alerts a minute.
API_RATE = 30


WEBHOOK_RATE = 60


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

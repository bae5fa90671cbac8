"""
``GET /health`` and ``GET /metrics``: the server's health (database, brokers,
locked accounts, closes the broker keeps refusing) and its Prometheus metrics,
whole on the admin port, to the admin token alone on the public one.
"""

import json
from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tradebot.server.guards import TOO_MANY_FAILURES, AdminAuth, _deny_admin
from tradebot.server.metrics import CONTENT_TYPE_LATEST

#: Seconds /health waits for the database before calling it unreachable.
HEALTH_TIMEOUT = 5.0


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

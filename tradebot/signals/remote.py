"""
An external signal provider over HTTP: the ``http`` strategy.

Each signal check of a symbol POSTs the symbol's recent completed candles to
the provider's URL and reads a BUY / SELL / none answer (the JSON of
docs/signals.md, read by `tradebot.signals.signaljson`). The request carries nothing
about any account, so one answer serves every account: the provider is asked
once per symbol and completed bar, and the sessions checking meanwhile share
that answer (or wait for the request under way).

A timeout, a connection error, an answer other than 200 or a malformed body
counts as "no signal": it is logged (at most one line a minute per kind of
failure, with how many were not logged), and never raised into the session.
After a timeout or a connection error the provider is left alone for `retry`
seconds (every check meanwhile is "no signal" at once), so a provider that is
down costs a session one timeout, not one per symbol.

The URL may carry a secret in its userinfo (sent as Basic authentication) or
its query string: it is only ever logged or shown through `redact_url`.
"""

import collections
import json
from typing import Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss

from tradebot.signals.shared import Shared
from tradebot.signals.signaljson import MAX_BODY, BadSignal, parse_object, read_signal
from tradebot.signals.strategies import AtrStops, signal_with_stops

#: Seconds between two log lines about the same kind of failure.
COMPLAINT_INTERVAL = 60.0
#: Answers remembered (symbol and bar), for the sessions that check later.
_REMEMBERED = 1000


def redact_url(url: str) -> str:
    """`url` without what may be secret: its userinfo and query string are
    replaced by ``***``, its fragment dropped."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(a malformed URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port is not None else "")
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + ("?***" if parts.query else "")


def _split_credentials(url: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """(`url` without its userinfo, (user, password) from it or None); a
    ValueError, not naming the URL, unless it is http(s) with a host."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError:
        host = parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ValueError("the http strategy's url must be an http:// or https:// URL with a host")
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, (unquote(user), unquote(password))


class _QuietFactory(_HTTP11ClientFactory):
    """The connection pool's factory, without a log line per connection."""

    noisy = False


class _Body(Protocol):
    """Collects a response body of at most `limit` bytes; `done` fires with
    it. Cancelling `done` (a timeout) drops the connection."""

    def __init__(self, limit: int):
        self.limit = limit
        self.chunks = []
        self.size = 0
        self.done = defer.Deferred(self._cancel)

    def _cancel(self, _):
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data):
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(BadSignal(f"the answer is larger than {self.limit} bytes"))
            self.transport.stopProducing()
            return
        self.chunks.append(data)

    def connectionLost(self, reason):
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


class _Complaints:
    """Logs a kind of failure at most once per `COMPLAINT_INTERVAL`, saying
    how many of that kind went unlogged since its last line."""

    def __init__(self, log, clock, shown_url: str):
        self._log = log
        self._clock = clock
        self._url = shown_url
        self._last = {}  # kind -> when last logged
        self._unlogged = collections.Counter()
        self.failing = False

    def __call__(self, kind: str, symbol: str, reason: str) -> None:
        self.failing = True
        now = self._clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < COMPLAINT_INTERVAL:
            self._unlogged[kind] += 1
            return
        self._last[kind] = now
        more = self._unlogged.pop(kind, 0)
        self._log.warn(
            "signal provider {url}: {reason} (asking about {symbol}): no signal"
            + (f"; {more} more like it in the last {COMPLAINT_INTERVAL:g} s" if more else ""),
            url=self._url,
            reason=reason,
            symbol=symbol,
        )

    def answered(self) -> None:
        """A good answer: say so once after failures."""
        if self.failing:
            self.failing = False
            self._log.info("signal provider {url} answers again", url=self._url)


def _describe(failure: Failure) -> str:
    """A failure to reach the provider, in one line (without the URL)."""
    error = failure.value
    reasons = getattr(error, "reasons", None)  # ResponseFailed, ResponseNeverReceived
    if reasons:
        error = reasons[0].value
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__


class HttpStrategy:
    """The ``http`` strategy: asks the provider at `url` (POST, JSON) for each
    symbol's signal on its last `candles` completed bars, waiting at most
    `timeout` seconds; an answer without stops gets them from `stops`.
    `evaluate` returns a Deferred that never fails: a provider that cannot
    be asked, or answers badly, is "no signal".

    Requests go through `reactor` (default: the global one, looked up when
    first needed); timeouts, the pause after a failure and the log's rate
    are timed by `clock` (default: the reactor)."""

    name = "http"
    asynchronous = True
    _log = Logger()

    def __init__(
        self, url: str, stops=None, reactor=None, timeout: float = 5.0, candles: int = 100, retry: float = 30.0, clock=None
    ):
        self._url, self._auth = _split_credentials(url.strip())
        if not 0 < timeout <= 300:
            raise ValueError("the http strategy's timeout must be more than 0 and at most 300 seconds")
        if not 1 <= candles <= 5000:
            raise ValueError("the http strategy's candles must be from 1 to 5000")
        if not 0 <= retry <= 3600:
            raise ValueError("the http strategy's retry must be from 0 to 3600 seconds")
        self.shown_url = redact_url(url)
        self.stops = AtrStops() if stops is None else stops
        self.timeout = timeout
        self.candles = candles
        self.retry = retry
        self._given_reactor = reactor
        self._clock = clock
        self._pool = None
        self._http = None
        self._answers = collections.OrderedDict()  # (symbol, digits, bars, last bar) -> (verdict,) or Shared
        self._quiet_until = None
        self._complain = _Complaints(self._log, self, self.shown_url)
        #: Requests sent, for tests and benchmarks.
        self.requests = 0

    def __repr__(self) -> str:
        return f"HttpStrategy({self.shown_url!r}, timeout={self.timeout:g}, candles={self.candles})"

    @property
    def _reactor(self):
        # looked up when first needed, not when the options are checked:
        # twistd installs its reactor after that
        if self._given_reactor is None:
            from twisted.internet import reactor

            self._given_reactor = reactor
        return self._given_reactor

    @property
    def clock(self):
        """What times the requests, the pause after a failure and the log."""
        return self._reactor if self._clock is None else self._clock

    def seconds(self) -> float:
        """The clock's time."""
        return self.clock.seconds()

    @property
    def candles_needed(self) -> int:
        """The candles sent, and those the stops helper reads."""
        return max(self.candles, self.stops.candles_needed)

    def evaluate(self, candles, spec) -> defer.Deferred:
        """Deferred[Optional[Signal]]: the provider's answer for these
        candles, asked once per symbol and last bar whoever asks."""
        if len(candles) == 0:
            return defer.succeed(None)
        # the last bar's close too: two brokers' bars of the same minute differ
        key = (candles.symbol, spec.digits, len(candles), float(candles.time[-1]), float(candles.close[-1]))
        known = self._answers.get(key)
        if isinstance(known, Shared):
            return known.wait()
        if known is not None:
            return defer.succeed(known[0])
        shared = self._answers[key] = Shared()
        while len(self._answers) > _REMEMBERED:
            self._answers.popitem(last=False)
        d = defer.ensureDeferred(self._ask(candles, spec))

        def _settle(result):
            if isinstance(result, Failure):  # a bug: logged, and no signal
                self._log.failure("asking the signal provider {url} failed", result, url=self.shown_url)
                result = None
            if self._answers.get(key) is shared:
                self._answers[key] = (result,)
            shared.settle(result)
            return result

        return d.addBoth(_settle)

    async def _ask(self, candles, spec):
        symbol = candles.symbol
        now = self.seconds()
        if self._quiet_until is not None and now < self._quiet_until:
            return None
        body = json.dumps(self._question(candles, spec)).encode()
        self.requests += 1
        exchange = defer.ensureDeferred(self._exchange(body))
        expired = []

        def _expire():
            expired.append(True)
            exchange.cancel()

        timer = self.clock.callLater(self.timeout, _expire)
        try:
            code, answer = await exchange
        except BadSignal as e:
            self._complain("malformed", symbol, str(e))
            return None
        except Exception:
            if expired:
                return self._unreachable("timeout", symbol, f"no answer within {self.timeout:g} s")
            return self._unreachable("connection", symbol, _describe(Failure()))
        finally:
            if timer.active():
                timer.cancel()
        if code != 200:
            self._complain("status", symbol, f"answered HTTP {code}")
            return None
        try:
            order = read_signal(parse_object(answer))
        except BadSignal as e:
            self._complain("malformed", symbol, f"malformed answer: {e}")
            return None
        self._complain.answered()
        if order.side is None:
            return None
        signal = signal_with_stops(order.side, self.stops, candles, spec, **order.stops)
        if signal is None:
            self._complain("stops", symbol, f"answered {order.side} without stops, and the stops helper has none")
        return signal

    def _unreachable(self, kind: str, symbol: str, reason: str) -> None:
        if self.retry > 0:
            self._quiet_until = self.seconds() + self.retry
            reason += f"; not asked again for {self.retry:g} s"
        self._complain(kind, symbol, reason)
        return None

    def _question(self, candles, spec) -> dict:
        """The request body: the symbol, its digits and its last candles."""
        count = min(self.candles, len(candles))
        digits = spec.digits
        columns = {
            name: np.round(getattr(candles, name)[-count:], digits).tolist()
            for name in ("open", "high", "low", "close")
        }
        times = candles.time[-count:].astype(np.int64).tolist()
        return {
            "symbol": candles.symbol,
            "digits": digits,
            "timeframe": "M1",
            "candles": [
                {"time": t, "open": o, "high": h, "low": low, "close": c}
                for t, o, h, low, c in zip(times, columns["open"], columns["high"], columns["low"], columns["close"])
            ],
        }

    async def _exchange(self, body: bytes):
        response = await self._client().post(
            self._url,
            data=body,
            headers={b"content-type": [b"application/json"], b"accept": [b"application/json"]},
            allow_redirects=False,
            unbuffered=True,
            auth=self._auth,  # the URL's userinfo, as Basic authentication
        )
        reader = _Body(MAX_BODY)
        response.deliverBody(reader)
        return response.code, await reader.done

    def _client(self) -> HTTPClient:
        if self._http is None:
            self._pool = HTTPConnectionPool(self._reactor, persistent=True)
            self._pool._factory = _QuietFactory
            self._pool.maxPersistentPerHost = 4
            self._http = HTTPClient(Agent(self._reactor, pool=self._pool))
        return self._http

    def close(self) -> defer.Deferred:
        """Close the kept-alive connections (at shutdown)."""
        pool, self._pool, self._http = self._pool, None, None
        if pool is None:
            return defer.succeed(None)
        return pool.closeCachedConnections()

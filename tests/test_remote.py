"""
The HTTP signal provider (`tradebot.signals.remote.HttpStrategy`) against a real
twisted.web server on 127.0.0.1: what it sends, each good answer, and each way
of failing (timeout, refused connection, non-200, malformed body), which is
"no signal", logged at most once a minute per kind, never raised. Time (the
timeout, the pause after a failure, the log's rate) is a `Clock`; the
requests are real.
"""

import base64
import json
from decimal import Decimal

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tradebot.broker import BUY, SELL, Candles, SymbolSpec
from tradebot.signals.names import shown_strategy, strategy_from_name
from tradebot.signals.remote import HttpStrategy, redact_url
from tradebot.signals.strategies import AtrStops, FixedStops, Signal
from tradebot.trading.market import MarketData

# point 0.00001; least stop distance (5 + 10 + 1) points = 0.00016
EURUSD = SymbolSpec("EURUSD", 5, Decimal(100000), Decimal("0.01"), Decimal(100), Decimal("0.01"), 5, 10)
HANG = object()
SECRET = "s3cretKEY"
PASSWORD = "pa55word"


def within(d, seconds=10):
    """`d`, failing after `seconds` of real time rather than hanging."""
    return d.addTimeout(seconds, reactor)


def bars(count=5, last_time=1_700_000_000.0, symbol="EURUSD"):
    """`count` M1 candles ending at `last_time`, with prices that need rounding."""
    time = last_time - 60.0 * np.arange(count)[::-1]
    close = 1.1 + 0.0001 * np.arange(count) + 1e-9  # the 1e-9 is not sent: rounded to 5 digits
    return Candles(symbol, time, close - 0.00005, close + 0.0001, close - 0.0001, close)


class QuietSite(Site):
    """The provider's Site, without access lines: they would show the key it
    is sent, and this test checks that tradebot logs none."""

    noisy = False

    def log(self, request):
        pass


class Provider(Resource):
    """A signal provider: keeps each request's JSON and answers with the
    next queued (code, body), `HANG` (never answers), or the default."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []
        self.headers = []
        self.answers = []
        self.default = (200, b'{"action": "none"}')
        self.hanging = []
        self._arrivals = []

    respond = None  # question -> (code, body), instead of the default

    def render_POST(self, request):
        question = json.loads(request.content.read())
        self.requests.append(question)
        self.headers.append((request.getHeader(b"content-type"), request.getHeader(b"authorization")))
        self.uris = getattr(self, "uris", []) + [request.uri]
        if self.answers:
            answer = self.answers.pop(0)
        else:
            answer = self.respond(question) if self.respond is not None else self.default
        if answer is HANG:
            self.hanging.append(request)
        arrivals, self._arrivals = self._arrivals, []
        for waiter in arrivals:
            waiter.callback(len(self.requests))
        if answer is HANG:
            return NOT_DONE_YET
        code, body = answer
        request.setResponseCode(code)
        return body

    def arrival(self):
        """Deferred: fires when the next request arrives."""
        d = defer.Deferred()
        self._arrivals.append(d)
        return d.addTimeout(30, reactor)

    def start(self):
        self.port = reactor.listenTCP(0, QuietSite(self), interface="127.0.0.1")
        self.number = self.port.getHost().port
        return self

    def stop(self):
        for request in self.hanging:
            if not request.finished and not request._disconnected:
                request.finish()
        return self.port.stopListening()


@pytest.fixture
def provider():
    server = Provider().start()
    yield server
    server.stop()


@pytest.fixture
def log_lines():
    """Every line logged during the test, formatted, with its level."""
    lines = []

    def observe(event):
        lines.append((event.get("log_level"), formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def warnings(lines, text="signal provider"):
    return [line for level, line in lines if level == LogLevel.warn and text in line]


def http(provider, clock, **options):
    """The strategy asking `provider` (the URL carries userinfo and a key)."""
    url = f"http://user:{PASSWORD}@127.0.0.1:{provider.number}/signal?key={SECRET}"
    options.setdefault("stops", FixedStops(200, 400))
    return HttpStrategy(url, reactor=reactor, clock=clock, **options)


def assert_no_secret(lines):
    for _, line in lines:
        assert SECRET not in line and PASSWORD not in line, line


# -- what it sends and each good answer ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_it_posts_the_symbol_its_digits_and_the_last_candles(provider, log_lines):
    strategy = http(provider, Clock(), candles=3)
    try:
        assert await within(strategy.evaluate(bars(5), EURUSD)) is None
    finally:
        await strategy.close()
    [question] = provider.requests
    # the query string reaches the provider (its key), the userinfo as Basic authentication
    assert provider.headers == [(b"application/json", b"Basic " + base64.b64encode(f"user:{PASSWORD}".encode()))]
    assert provider.uris == [f"/signal?key={SECRET}".encode()]
    assert question == {
        "symbol": "EURUSD",
        "digits": 5,
        "timeframe": "M1",
        "candles": [
            # the last 3 of 5 bars; close 1.1 + 0.0001 * i, open 0.00005 under it,
            # high and low 0.0001 each side, all rounded to 5 digits
            {"time": 1_700_000_000 - 120, "open": 1.10015, "high": 1.1003, "low": 1.1001, "close": 1.1002},
            {"time": 1_700_000_000 - 60, "open": 1.10025, "high": 1.1004, "low": 1.1002, "close": 1.1003},
            {"time": 1_700_000_000, "open": 1.10035, "high": 1.1005, "low": 1.1003, "close": 1.1004},
        ],
    }
    assert warnings(log_lines) == []


@pytest.mark.parametrize(
    "body, expected",
    [
        # prices: kept as given (rounded to the digits when the trade is placed)
        (b'{"action": "buy", "sl": 1.09, "tp": "1.1125"}', Signal(BUY, stop_price=Decimal("1.09"), take_price=Decimal("1.1125"))),
        # distances: rounded to the point and kept clear of the stops level (0.00016)
        (b'{"action": "SELL", "sl_distance": 0.000504, "tp_distance": 0.0001}', Signal(SELL, Decimal("0.00050"), Decimal("0.00016"))),
        # no stops: the strategy's helper's (fixed 200 and 400 points)
        (b'{"action": "Buy"}', Signal(BUY, Decimal("0.00200"), Decimal("0.00400"))),
        # one of each
        (b'{"action": "sell", "sl": 1.2, "comment": "from my model"}', Signal(SELL, take_distance=Decimal("0.00400"), stop_price=Decimal("1.2"))),
        (b'{"action": "none"}', None),
        (b'{"action": null}', None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_good_answers(provider, log_lines, body, expected):
    provider.answers = [(200, body)]
    strategy = http(provider, Clock())
    try:
        assert await within(strategy.evaluate(bars(), EURUSD)) == expected
    finally:
        await strategy.close()
    assert warnings(log_lines) == []


@pytest_twisted.ensureDeferred
async def test_an_answer_without_stops_takes_the_atr_helpers():
    # every true range 20 points: ATR(3) 0.00020, stops 1.5 and 3 ATR
    provider = Provider().start()
    provider.answers = [(200, b'{"action": "buy"}')]
    low = np.full(10, 1.1)
    candles = Candles("EURUSD", 60.0 * np.arange(10), low, low + 0.0002, low, low + 0.0001)
    strategy = http(provider, Clock(), stops=AtrStops(period=3))
    try:
        assert strategy.candles_needed == 100  # the candles sent; the ATR needs 12
        assert await within(strategy.evaluate(candles, EURUSD)) == Signal(BUY, Decimal("0.00030"), Decimal("0.00060"))
    finally:
        await strategy.close()
        await provider.stop()


# -- one request per symbol and bar, whoever asks ------------------------------------


class OneSymbolBroker:
    """Serves the candles the test sets (for MarketData)."""

    def __init__(self):
        self.candles_now = bars()
        self.calls = 0

    def candles(self, symbol, count):
        self.calls += 1
        return defer.succeed(self.candles_now)


@pytest_twisted.ensureDeferred
async def test_sessions_asking_meanwhile_share_one_request_per_symbol_and_bar(provider, log_lines):
    provider.answers = [HANG]
    clock = Clock()
    strategy = http(provider, clock, timeout=30)
    broker = OneSymbolBroker()
    market = MarketData(clock, max_age=1.0)
    try:
        arrived = provider.arrival()
        first = market.signal(broker, "EURUSD", EURUSD, strategy)
        await arrived
        # a second account while the request is under way, and another once the
        # candles were fetched again (a new object, the same bars): no new request
        second = market.signal(broker, "EURUSD", EURUSD, strategy)
        clock.advance(2)
        broker.candles_now = bars()
        third = market.signal(broker, "EURUSD", EURUSD, strategy)
        assert broker.calls == 2
        assert not first.called and not second.called and not third.called
        request = provider.hanging.pop()
        request.write(b'{"action": "buy", "sl_distance": 0.001, "tp_distance": 0.002}')
        request.finish()
        signal = Signal(BUY, Decimal("0.00100"), Decimal("0.00200"))
        assert [await within(first), await within(second), await within(third)] == [signal] * 3
        assert len(provider.requests) == 1
        # later, the same bars: still the one answer
        clock.advance(2)
        assert await within(market.signal(broker, "EURUSD", EURUSD, strategy)) == signal
        assert len(provider.requests) == 1
        # a new bar: asked again
        clock.advance(2)
        broker.candles_now = bars(last_time=1_700_000_060.0)
        assert await within(market.signal(broker, "EURUSD", EURUSD, strategy)) is None
        assert len(provider.requests) == 2
        # another symbol on the same bar is a question of its own
        broker.candles_now = bars(last_time=1_700_000_060.0, symbol="GBPUSD")
        clock.advance(2)
        assert await within(market.signal(broker, "GBPUSD", EURUSD, strategy)) is None
        assert len(provider.requests) == 3
    finally:
        await strategy.close()
    assert warnings(log_lines) == []


# -- failures: no signal, logged, rate-limited ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_timeout_is_no_signal_and_the_provider_is_left_alone_for_retry_seconds(provider, log_lines):
    provider.answers = [HANG]
    clock = Clock()
    strategy = http(provider, clock, timeout=2, retry=30)
    try:
        arrived = provider.arrival()
        verdict = strategy.evaluate(bars(), EURUSD)
        await arrived
        clock.advance(1.9)
        assert not verdict.called
        clock.advance(0.1)
        assert await within(verdict) is None
        [line] = warnings(log_lines)
        assert "no answer within 2 s; not asked again for 30 s" in line and "EURUSD" in line
        # meanwhile every check is "no signal" at once, without a request
        clock.advance(29)
        assert await within(strategy.evaluate(bars(last_time=1_700_000_060.0), EURUSD)) is None
        assert len(provider.requests) == 1
        # then it is asked again
        clock.advance(1)
        provider.answers = [(200, b'{"action": "sell"}')]
        assert (await within(strategy.evaluate(bars(last_time=1_700_000_120.0), EURUSD))).side == SELL
        assert len(provider.requests) == 2
        assert any("answers again" in line for _, line in log_lines)
    finally:
        await strategy.close()
    assert_no_secret(log_lines)


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_no_signal(log_lines):
    closed = Provider().start()
    await closed.stop()  # nothing listens on its port now
    strategy = http(closed, Clock(), retry=0)
    try:
        assert await within(strategy.evaluate(bars(), EURUSD)) is None
    finally:
        await strategy.close()
    [line] = warnings(log_lines)
    assert "ConnectionRefusedError" in line and "no signal" in line
    assert_no_secret(log_lines)


@pytest.mark.parametrize(
    "answer, logged",
    [
        ((500, b'{"action": "buy"}'), "answered HTTP 500"),
        ((404, b"not here"), "answered HTTP 404"),
        ((302, b""), "answered HTTP 302"),  # a redirect is not followed
        ((200, b"BUY"), "malformed answer: the body is not JSON"),
        ((200, b'["buy"]'), "malformed answer: the body must be a JSON object"),
        ((200, b'{"action": "hold"}'), 'malformed answer: "action" must be "buy", "sell" or "none", not "hold"'),
        ((200, b'{"signal": "buy"}'), "malformed answer: unknown key \"signal\""),
        ((200, b'{"sl": 1.1}'), 'malformed answer: "action" is missing'),
        ((200, b'{"action": "buy", "sl": -1}'), 'malformed answer: "sl" must be more than 0'),
        ((200, b'{"action": "buy", "tp": true}'), 'malformed answer: "tp" must be a number'),
        ((200, b'{"action": "buy", "sl": NaN}'), "malformed answer: the body is not JSON: NaN is not a number"),
        ((200, b'{"action": "buy", "sl": 1.1, "sl_distance": 0.001}'), 'give "sl" or "sl_distance", not both'),
        ((200, b"\xff\xfe"), "malformed answer: the body is not UTF-8"),
        ((200, b'{"action": "buy", "comment": "' + b"x" * 70000 + b'"}'), "the answer is larger than 65536 bytes"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_answer_is_no_signal_and_logged(provider, log_lines, answer, logged):
    provider.answers = [answer]
    strategy = http(provider, Clock())
    try:
        assert await within(strategy.evaluate(bars(), EURUSD)) is None
    finally:
        await strategy.close()
    [line] = warnings(log_lines)
    assert logged in line and "no signal" in line, line
    assert_no_secret(log_lines)


@pytest_twisted.ensureDeferred
async def test_failures_are_logged_at_most_once_a_minute_per_kind(provider, log_lines):
    clock = Clock()
    strategy = http(provider, clock)
    provider.default = (503, b"busy")
    try:
        for minute in range(5):  # five bars, five requests, all refused
            assert await within(strategy.evaluate(bars(last_time=1_700_000_000.0 + 60 * minute), EURUSD)) is None
            clock.advance(10)
        assert len(provider.requests) == 5
        assert len(warnings(log_lines)) == 1
        # another kind of failure has a line of its own
        provider.answers = [(200, b"nonsense")]
        assert await within(strategy.evaluate(bars(last_time=1_700_001_000.0), EURUSD)) is None
        assert len(warnings(log_lines)) == 2
        # a minute after the first line, the next one says how many were not logged
        clock.advance(20)
        assert await within(strategy.evaluate(bars(last_time=1_700_002_000.0), EURUSD)) is None
        lines = warnings(log_lines)
        assert len(lines) == 3
        assert "answered HTTP 503" in lines[2] and "4 more like it in the last 60 s" in lines[2]
    finally:
        await strategy.close()


# -- the URL's secrets ----------------------------------------------------------------


def test_the_url_is_shown_without_userinfo_or_query():
    assert redact_url("https://bob:pw@signals.example:8443/v1/ask?key=abc&x=1#frag") == (
        "https://***@signals.example:8443/v1/ask?***"
    )
    assert redact_url("http://127.0.0.1/signal") == "http://127.0.0.1/signal"
    assert redact_url("http://[::1]:80/?k") == "http://[::1]:80/?***"
    text = "http:timeout=2,candles=50,url=https://bob:pw@h.example/a?key=abc,def"
    assert shown_strategy(text) == "http:timeout=2,candles=50,url=https://***@h.example/a?***"
    assert shown_strategy("ma_cross:fast=3") == "ma_cross:fast=3"
    assert "abc" not in repr(strategy_from_name(text)) and "pw" not in repr(strategy_from_name(text))


def test_the_http_strategy_by_name():
    strategy = strategy_from_name("http:timeout=2.5,candles=30,retry=0,stops=fixed,sl_points=100,url=https://h.example/s?a=1,b=2")
    assert isinstance(strategy, HttpStrategy) and strategy.asynchronous
    assert (strategy.timeout, strategy.candles, strategy.retry) == (2.5, 30, 0.0)
    assert strategy.stops == FixedStops(100, 400)
    assert strategy._url == "https://h.example/s?a=1,b=2"  # commas and = belong to the URL
    with_user = strategy_from_name("http:url=https://bob:p%40ss@h.example/s")
    assert (with_user._url, with_user._auth) == ("https://h.example/s", ("bob", "p@ss"))
    default = strategy_from_name("http:url=http://127.0.0.1:9/")
    assert (default.timeout, default.candles, default.retry, default.stops) == (5.0, 100, 30.0, AtrStops())
    assert default.candles_needed == 100
    assert strategy_from_name("http:candles=10,url=http://h/").candles_needed == 56  # the ATR's


@pytest.mark.parametrize(
    "text, message",
    [
        ("http", "needs url=URL"),
        ("http:timeout=3", "needs url=URL"),
        ("http:https://h.example/?key=s3cretKEY", "needs url=URL"),
        ("http:url=", "needs url=URL"),
        ("http:url=ftp://h.example/?key=s3cretKEY", "must be an http:// or https:// URL"),
        ("http:url=https:///?key=s3cretKEY", "must be an http:// or https:// URL"),
        ("http:timeout=0,url=https://h/?key=s3cretKEY", "timeout must be more than 0"),
        ("http:timeout=nan,url=https://h/?key=s3cretKEY", "timeout must be a finite number"),
        ("http:candles=0,url=https://h/?key=s3cretKEY", "candles must be from 1"),
        ("http:retry=-1,url=https://h/?key=s3cretKEY", "retry must be from 0"),
        ("http:fast=3,url=https://u:pa55word@h/?key=s3cretKEY", "unknown parameter 'fast' in 'http:fast=3,url=https://***@h/?***'"),
        ("http:timeout=x,url=https://u:pa55word@h/?key=s3cretKEY", "timeout must be a finite number in 'http:timeout=x,url=https://***@h/?***'"),
    ],
)
def test_http_strategy_errors_never_show_the_secret(text, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("*", r"\*").replace("(", r"\(")) as raised:
        strategy_from_name(text)
    assert SECRET not in str(raised.value) and PASSWORD not in str(raised.value)

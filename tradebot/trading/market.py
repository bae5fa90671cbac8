"""
Market data shared by every session trading through the same broker backend.

Many accounts watch the same symbols. `MarketData` fetches a symbol's candles
once per `max_age` seconds for all of them, shares a fetch that is still under
way, and evaluates a strategy once per set of candles, so a thousand sessions
checking XAUUSD in the same second cost one broker call and one indicator run.
A strategy may answer with a Deferred (one that asks an HTTP signal provider):
the sessions that want the same verdict meanwhile wait for that one answer.
"""

from typing import Dict, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tradebot.signals.shared import Shared


class MarketData:
    """A cache of candles and of strategy signals, per symbol, for one backend.

    `clock` provides ``seconds()``; entries older than `max_age` seconds are
    fetched again. Errors are not cached: the next caller asks again.
    """

    _log = Logger()

    def __init__(self, clock, max_age: float = 1.0):
        self._clock = clock
        self._max_age = max_age
        # (symbol, count) -> (fetched at, Deferred or Candles)
        self._candles: Dict[Tuple[str, int], tuple] = {}
        # (strategy, symbol) -> (candles object, signal or Shared while evaluated)
        self._signals: Dict[tuple, tuple] = {}

    def candles(self, broker, symbol: str, count: int):
        """Deferred[Candles]: recent candles, fetched through `broker` unless a
        fresh enough set (or a fetch under way) is shared."""
        key = (symbol, count)
        now = self._clock.seconds()
        cached = self._candles.get(key)
        if cached is not None and now - cached[0] < self._max_age:
            fetched_at, value = cached
            if isinstance(value, list):  # a fetch under way: wait with the others
                waiter = defer.Deferred()
                value.append(waiter)
                return waiter
            return defer.succeed(value)

        waiters = [defer.Deferred()]
        self._candles[key] = (now, waiters)

        def _settle(result):
            if self._candles.get(key, (None, None))[1] is waiters:
                if isinstance(result, Failure):
                    del self._candles[key]
                else:
                    self._candles[key] = (now, result)
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

        defer.maybeDeferred(broker.candles, symbol, count).addBoth(_settle)
        return waiters[0]

    @defer.inlineCallbacks
    def signal(self, broker, symbol: str, spec, strategy):
        """Deferred[Optional[Signal]]: `strategy`'s verdict on the latest
        candles, computed once per set of candles; `strategy.evaluate` may
        return the verdict or a Deferred of it. A failed evaluation is not
        kept: the next caller evaluates again."""
        candles = yield self.candles(broker, symbol, strategy.candles_needed)
        key = (id(strategy), symbol)
        cached = self._signals.get(key)
        if cached is not None and cached[0] is candles:
            if isinstance(cached[1], Shared):
                verdict = yield cached[1].wait()
                return verdict
            return cached[1]
        shared = Shared()
        self._signals[key] = (candles, shared)
        try:
            verdict = yield defer.maybeDeferred(strategy.evaluate, candles, spec)
        except BaseException:
            failure = Failure()
            if self._signals.get(key, (None, None))[1] is shared:
                del self._signals[key]
            shared.settle(failure)
            raise
        if self._signals.get(key, (None, None))[1] is shared:
            self._signals[key] = (candles, verdict)
        shared.settle(verdict)
        return verdict

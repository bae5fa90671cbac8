"""
`MarketData` with a strategy that answers later (a Deferred, as the HTTP
provider does): the sessions asking meanwhile wait for that one evaluation,
and a failed one is not kept.
"""

from decimal import Decimal

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from tradebot.broker import BUY
from tradebot.signals.strategies import Signal
from tradebot.trading.market import MarketData

from .scripted import SPECS, ScriptedBroker


class LaterStrategy:
    """Answers each evaluation with a Deferred the test fires."""

    name = "later"
    candles_needed = 5
    asynchronous = True

    def __init__(self):
        self.pending = []

    def evaluate(self, candles, spec):
        d = defer.Deferred()
        self.pending.append(d)
        return d


SIGNAL = Signal(BUY, Decimal("5.00"), Decimal("10.00"))


def test_callers_wait_for_the_one_evaluation_under_way():
    clock = Clock()
    market = MarketData(clock)
    broker = ScriptedBroker(clock)
    strategy = LaterStrategy()
    verdicts = [market.signal(broker, "XAUUSD", SPECS["XAUUSD"], strategy) for _ in range(3)]
    assert len(strategy.pending) == 1 and broker.candle_calls == 1
    assert not any(v.called for v in verdicts)
    strategy.pending[0].callback(SIGNAL)
    assert [v.result for v in verdicts] == [SIGNAL] * 3
    # kept for the same candles...
    assert market.signal(broker, "XAUUSD", SPECS["XAUUSD"], strategy).result == SIGNAL
    assert len(strategy.pending) == 1
    # ...evaluated again on fresh ones
    clock.advance(2)
    market.signal(broker, "XAUUSD", SPECS["XAUUSD"], strategy)
    assert len(strategy.pending) == 2


def test_a_failed_evaluation_fails_its_waiters_and_is_not_kept():
    clock = Clock()
    market = MarketData(clock)
    broker = ScriptedBroker(clock)
    strategy = LaterStrategy()
    first = market.signal(broker, "XAUUSD", SPECS["XAUUSD"], strategy)
    second = market.signal(broker, "XAUUSD", SPECS["XAUUSD"], strategy)
    strategy.pending[0].errback(RuntimeError("provider bug"))
    for verdict in (first, second):
        with pytest.raises(RuntimeError):
            verdict.result.raiseException()
        verdict.addErrback(lambda f: None)
    # the same candles: asked again, not answered with the failure
    third = market.signal(broker, "XAUUSD", SPECS["XAUUSD"], strategy)
    assert len(strategy.pending) == 2
    strategy.pending[1].callback(None)
    assert third.result is None

"""
A client that stops reading: the server holds its messages back instead of
growing its write buffer, keeps only the newest of a superseded kind (an open
trade's report, a symbol's "checking"), never drops a signal, a placement or a
completion, and closes the client (1008) if it stays behind too long or falls
too far behind. Driven through the transport's producer callbacks on a Clock.
"""

from decimal import Decimal

from twisted.internet.task import Clock

from tradebot import messages
from tradebot.loops import supersede_key
from tradebot.protocol import CLOSE_POLICY_VIOLATION, PremiumFactory


class Connection:
    """A PremiumProtocol that is open, with what it writes and how it closes recorded."""

    def __init__(self, slow_client_timeout=60.0, max_waiting=1000):
        self.clock = Clock()
        factory = PremiumFactory(None, None, self.clock, slow_client_timeout=slow_client_timeout, max_waiting=max_waiting)
        self.protocol = protocol = factory.buildProtocol(None)
        protocol.state = protocol.STATE_OPEN
        self.written, self.closed = [], []
        protocol.sendPreparedMessage = self.written.append
        protocol.close_with = lambda code, reason: self.closed.append((code, reason))

    def send(self, message):
        self.protocol.send_frame(message["message"] + " " + str(message.get("data")), supersede_key(message))


def report(price):
    return messages.active_trade(7, "XAUUSD", "BUY", Decimal(1), Decimal(3), Decimal(2), Decimal("0.1"), Decimal(price), Decimal(0))


def test_a_reading_client_gets_every_message_at_once():
    c = Connection()
    c.send(messages.checking("XAUUSD"))
    c.send(report("2"))
    assert len(c.written) == 2


def test_a_client_behind_gets_the_newest_report_and_every_signal_placement_and_completion():
    c = Connection()
    c.protocol.pauseProducing()  # its buffer is full
    c.send(report("2.1"))
    c.send(messages.checking("EURUSD"))
    c.send(messages.signal("BUY", "EURUSD"))
    c.send(messages.trade_placed("EURUSD"))
    c.send(report("2.2"))
    c.send(messages.checking("EURUSD"))
    c.send(report("2.3"))
    completed = messages.trade_completed(7, "XAUUSD", "profit", 1, 2, Decimal("0.1"), Decimal(1), Decimal(3), Decimal(10), Decimal(1), Decimal(3))
    c.send(completed)
    assert c.written == []
    c.protocol.resumeProducing()
    texts = [w.split(" ", 1)[0] for w in c.written]
    assert texts == ["BUY", "A", "checking", "active", "Trade"]  # signal, placed, newest checking, newest report, completion
    assert "2.3" in c.written[3]
    assert c.closed == []


def test_a_client_behind_for_too_long_is_closed():
    c = Connection(slow_client_timeout=30)
    c.protocol.pauseProducing()
    c.send(messages.signal("SELL", "XAUUSD"))
    c.clock.advance(29)
    assert c.closed == []
    c.clock.advance(1)
    assert c.closed == [(CLOSE_POLICY_VIOLATION, "too slow")]


def test_a_client_that_catches_up_in_time_stays():
    c = Connection(slow_client_timeout=30)
    c.protocol.pauseProducing()
    c.clock.advance(20)
    c.protocol.resumeProducing()
    c.clock.advance(60)
    assert c.closed == []


def test_a_client_too_far_behind_is_closed_and_what_waited_is_let_go():
    c = Connection(max_waiting=6)  # five signals and one report fit
    c.protocol.pauseProducing()
    for i in range(5):
        c.send(messages.signal("BUY", f"S{i}"))
    assert c.closed == []
    for i in range(100):  # superseded kinds never pile up
        c.send(report(str(i)))
    assert c.closed == []
    c.send(messages.signal("BUY", "S6"))
    assert c.closed == [(CLOSE_POLICY_VIOLATION, "too slow")]
    assert not c.protocol._waiting


def test_a_frame_nested_deeper_than_the_json_decoder_goes_is_an_invalid_message():
    from tradebot.protocol import parse_command

    assert parse_command(b"[" * 2000 + b"]" * 2000) == (None, "JSON nested too deeply")
    assert parse_command(b'{"msg": "ping"}') == ("ping", None)

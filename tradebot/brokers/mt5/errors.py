"""
What goes wrong between the server and a terminal: an order whose outcome is
unknown, a deal whose answer was lost, a call the module failed (with its
``last_error``); and floats from the module read as exact decimals.
"""

from decimal import Decimal
from typing import Optional

from tradebot.broker import BrokerError, BrokerUnavailable


class OutcomeUnknown(BrokerUnavailable):
    """An order's answer was lost and the order was not found (yet); the
    session looks it up again later. It is never resent."""


class _Lost(Exception):
    """A deal's outcome is unknown: its answer was lost, or the trade server
    said it may have gone through. `why` says which."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class TerminalError(BrokerError):
    """An API call failed and ``last_error()`` said why."""

    def __init__(self, call: str, code: Optional[int], message: str):
        super().__init__(f"{call}: {message} ({code})")
        self.call = call
        self.code = code
        self.message = message


def _decimal(value) -> Decimal:
    return Decimal(repr(float(value)))

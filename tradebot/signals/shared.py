"""
`Shared`: one result that many callers wait for (a signal asked for once per
symbol and bar, whoever asks).
"""

from twisted.internet import defer
from twisted.python.failure import Failure


class Shared:
    """One result that many callers wait for: `wait` gives each its own
    Deferred, `settle` fires them all with the result (or the Failure)."""

    def __init__(self):
        self._waiters = []

    def wait(self) -> defer.Deferred:
        """A Deferred of the result, firing when `settle` is called."""
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def settle(self, result) -> None:
        """Fire every waiter with `result` (a value or a Failure)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

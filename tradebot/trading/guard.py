"""
`guarded`: run a piece of a session's work (a loop body, a delivery) and log,
never raise, any error: a `LoopingCall` whose body fails stops for good.
"""

from twisted.internet import defer

from tradebot.store.faults import DatabaseFault


@defer.inlineCallbacks
def guarded(log, what: str, fn, *args):
    """Run ``fn(*args)`` (a coroutine function) and log any error: a database
    fault as information (the store has said so once already), anything else
    as a failure."""
    try:
        yield defer.ensureDeferred(fn(*args))
    except DatabaseFault as e:
        log.info("{what} stopped: {error}; the loop carries on", what=what, error=e)
    except Exception:
        log.failure("{what} failed; the loop carries on", what=what)

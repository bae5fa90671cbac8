"""
Fail points: named places in the trade cycle where a test can make the server
die as abruptly as a power cut does, the way fail points work in FreeBSD and
TiKV.

``crash_point(name)`` does nothing unless the environment variable
``TRADEBOT_FAILPOINTS`` (comma-separated) names that point; then it writes one
line to standard error saying so and kills its own process with SIGKILL, at
once: no shutdown, no flush, no reactor turn. The points, in the order a trade
meets them:

- ``after_intent``: the intent (a pending trade) is stored, its order not sent;
- ``after_order``: the broker filled the order, the fill is not stored;
- ``after_close``: the broker reported the close, the result is not stored;
- ``after_delivery``: a completion's frame was handed to the client
  connections, its delivery is not stored.

Production never sets the variable; an unknown name in it stops the server at
start-up (`armed` raises), so a misspelt point cannot pass unnoticed.
"""

import os
import signal
from typing import FrozenSet

ENVIRONMENT = "TRADEBOT_FAILPOINTS"

#: Every fail point, with where it sits.
POINTS = {
    "after_intent": "the intent is stored, the order not sent",
    "after_order": "the order is filled, the fill not stored",
    "after_close": "the close is reported, the result not stored",
    "after_delivery": "a completion is handed to the connections, its delivery not stored",
}


def armed() -> FrozenSet[str]:
    """The points ``TRADEBOT_FAILPOINTS`` names (none when unset); raises
    ValueError for a name that is not a point."""
    text = os.environ.get(ENVIRONMENT, "")
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(POINTS)
    if unknown:
        raise ValueError(
            f"{ENVIRONMENT}: unknown fail point(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(POINTS)})"
        )
    return names


def crash_point(name: str, **details) -> None:
    """Kill this process with SIGKILL if `name` is armed; otherwise return.
    `details` (ids, never secrets) go on the line written before dying."""
    assert name in POINTS, name
    if name not in armed():
        return
    shown = " ".join(f"{key}={value}" for key, value in details.items())
    os.write(2, f"tradebot failpoint {name} ({shown}): killing the process with SIGKILL\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)

"""
Log output for ``twistd tradebot --log-format json``: one JSON object per line.

Each line holds ``time`` (UTC, ISO 8601), ``level``, ``namespace`` and ``text``
(the readable message, as the text format prints it), plus the fields an
operator filters on when the event has them: ``account``, ``symbol``,
``trade_id``, ``broker``; and ``traceback`` for a logged failure. Nothing else
of the event is written, so no value a log call did not put in its message can
leak out. Tokens and passwords are never put in any log message.
"""

import json
import sys
from datetime import datetime, timezone

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

#: Event fields copied to each JSON line when present.
FIELDS = ("account", "symbol", "trade_id", "broker")


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event to `stream` as one JSON object and a newline."""

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, event: dict) -> None:
        when = datetime.fromtimestamp(event.get("log_time", 0), tz=timezone.utc)
        level = event.get("log_level")
        record = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace", ""),
            "text": formatEvent(event),
        }
        for key in FIELDS:
            if event.get(key) is not None:
                record[key] = _plain(event[key])
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def json_observer(stream=None) -> JSONLinesObserver:
    """The observer twistd installs for ``--log-format json`` (its
    ``--logger`` factory): JSON lines on standard output."""
    return JSONLinesObserver(stream if stream is not None else sys.stdout)

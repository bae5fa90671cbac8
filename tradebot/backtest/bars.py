"""
OHLC bars from CSV files, as the float64 numpy arrays strategies read.

Two formats are read, told apart by the header line:

- MT5's export (History Center / "Export bars"): tab-separated, a header
  ``<DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL> <SPREAD>``,
  dates as ``2024.01.02`` and times as ``13:05`` or ``13:05:00`` (daily and
  larger bars have no ``<TIME>`` column); times are the broker's server time,
  read as UTC;
- plain: comma-separated ``time,open,high,low,close[,volume]``, the time as
  epoch seconds or ISO 8601 (``2024-01-02T13:05:00``, UTC unless it says).

Rows are read one at a time into growing arrays, so a file of millions of bars
costs its arrays, not a list of Python objects per row. A bad row raises
`BarsError` naming the file and line. The bar size is inferred as the most
common gap between consecutive bars.
"""

import csv
import datetime
from typing import Callable, Iterator, Optional, TextIO

import attrs
import numpy as np

from tradebot.broker import Candles

MT5_COLUMNS = ("<DATE>", "<TIME>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>", "<TICKVOL>", "<VOL>", "<SPREAD>")
PLAIN_COLUMNS = ("time", "open", "high", "low", "close", "volume")
_CHUNK = 65536


class BarsError(ValueError):
    """A bars file cannot be read; the message names the file and the line."""


@attrs.frozen(eq=False)
class Bars:
    """A series of bars, oldest first: epoch-second `time` and OHLC float64
    arrays of equal length, and the inferred bar size in seconds."""

    symbol: str
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    bar_seconds: int

    def __len__(self) -> int:
        return len(self.close)

    def candles(self, start: int, stop: int) -> Candles:
        """Bars [start, stop) as `Candles` (views, no copy)."""
        return Candles(
            symbol=self.symbol,
            time=self.time[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
        )


def bars_from_arrays(symbol: str, time, open, high, low, close) -> Bars:
    """`Bars` from array-likes (checked: equal lengths, rising times,
    low <= open, close <= high)."""
    columns = [np.ascontiguousarray(a, dtype=np.float64) for a in (time, open, high, low, close)]
    if len({len(c) for c in columns}) != 1:
        raise BarsError("bars: the columns have different lengths")
    t, o, h, l, c = columns
    bad = np.flatnonzero((l > np.minimum(o, c)) | (h < np.maximum(o, c)) | ~np.isfinite(o + h + l + c))
    if len(bad):
        raise BarsError(f"bars: bar {int(bad[0])} has a low above its open/close or a high below them")
    return Bars(symbol, t, o, h, l, c, _bar_seconds(t))


def read_bars(path: str, symbol: str, progress: Optional[Callable[[int], None]] = None) -> Bars:
    """The bars of the CSV file at `path` (either format); `progress` is
    called with the bytes read so far now and then. Raises `BarsError`."""
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as f:
            return _read(f, path, symbol, progress)
    except OSError as e:
        raise BarsError(f"{path}: cannot read: {e.strerror}")


def _read(f: TextIO, path: str, symbol: str, progress) -> Bars:
    header = f.readline()
    if not header.strip():
        raise BarsError(f"{path}: empty file")
    if header.lstrip().startswith("<"):
        names = [n.strip().upper() for n in header.strip().split("\t")]
        rows = _mt5_rows(f, path, names)
    else:
        names = [n.strip().lower() for n in header.strip().split(",")]
        rows = _plain_rows(f, path, names)
    out = np.empty((_CHUNK, 5), dtype=np.float64)
    count = 0
    last_time = -np.inf
    for line_no, row in rows:
        if row[0] <= last_time:
            raise BarsError(f"{path}:{line_no}: time does not rise (bars must be oldest first, no duplicates)")
        o, h, l, c = row[1:]
        if not (l <= min(o, c) and h >= max(o, c)):
            raise BarsError(f"{path}:{line_no}: low {l} / high {h} do not contain open {o} and close {c}")
        last_time = row[0]
        if count == len(out):
            out = np.resize(out, (len(out) * 2, 5))
            if progress is not None:
                progress(f.tell() if f.seekable() else 0)
        out[count] = row
        count += 1
    if count == 0:
        raise BarsError(f"{path}: no bars")
    out = out[:count]
    columns = [np.ascontiguousarray(out[:, i]) for i in range(5)]
    return Bars(symbol, *columns, _bar_seconds(columns[0]))


def _number(text: str, path: str, line_no: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BarsError(f"{path}:{line_no}: {what} {text.strip()!r} is not a number")
    if not np.isfinite(value) or value <= 0:
        raise BarsError(f"{path}:{line_no}: {what} {text.strip()!r} must be a price above 0")
    return value


def _mt5_rows(f, path: str, names) -> Iterator:
    if names[0] != "<DATE>" or not set(("<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>")) <= set(names):
        raise BarsError(f"{path}:1: not an MT5 bars header (expected {' '.join(MT5_COLUMNS)})")
    has_time = "<TIME>" in names
    index = [names.index(n) for n in ("<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>")]
    epoch = datetime.datetime(1970, 1, 1)
    day_cache = {}
    for line_no, line in enumerate(f, 2):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) < len(names):
            raise BarsError(f"{path}:{line_no}: {len(fields)} fields, the header has {len(names)}")
        date = fields[0]
        day = day_cache.get(date)
        if day is None:
            try:
                day = (datetime.datetime.strptime(date, "%Y.%m.%d") - epoch).total_seconds()
            except ValueError:
                raise BarsError(f"{path}:{line_no}: date {date!r} is not YYYY.MM.DD")
            if len(day_cache) > 100000:
                day_cache.clear()
            day_cache[date] = day
        seconds = 0
        if has_time:
            parts = fields[1].split(":")
            try:
                if len(parts) not in (2, 3):
                    raise ValueError
                hh, mm = int(parts[0]), int(parts[1])
                ss = int(parts[2]) if len(parts) == 3 else 0
                if not (0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 60):
                    raise ValueError
            except ValueError:
                raise BarsError(f"{path}:{line_no}: time {fields[1]!r} is not HH:MM[:SS]")
            seconds = hh * 3600 + mm * 60 + ss
        o, h, l, c = (_number(fields[i], path, line_no, w) for i, w in zip(index, ("open", "high", "low", "close")))
        yield line_no, (day + seconds, o, h, l, c)


def _plain_rows(f, path: str, names) -> Iterator:
    if names[:5] != list(PLAIN_COLUMNS[:5]):
        raise BarsError(
            f"{path}:1: unknown header {','.join(names)!r} (expected {','.join(PLAIN_COLUMNS)} or MT5's export)"
        )
    for line_no, fields in enumerate(csv.reader(f), 2):
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) < 5:
            raise BarsError(f"{path}:{line_no}: {len(fields)} fields, expected at least 5")
        t = _time(fields[0], path, line_no)
        o, h, l, c = (_number(fields[i], path, line_no, w) for i, w in zip(range(1, 5), ("open", "high", "low", "close")))
        yield line_no, (t, o, h, l, c)


def _time(text: str, path: str, line_no: int) -> float:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not np.isfinite(value):
            raise BarsError(f"{path}:{line_no}: time {text!r} is not a time")
        return value
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BarsError(f"{path}:{line_no}: time {text!r} is neither epoch seconds nor ISO 8601")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _bar_seconds(time: np.ndarray) -> int:
    """The most common gap between consecutive bars (60 for a single bar)."""
    if len(time) < 2:
        return 60
    gaps = np.diff(time)
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])

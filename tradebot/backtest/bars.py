"""
OHLC bars from CSV files, as the float64 numpy arrays strategies read.

Two formats are read, told apart by the header line:

- MT5's export (History Center / "Export bars"): tab-separated, a header
  ``<DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL> <SPREAD>``,
  dates as ``2024.01.02`` and times as ``13:05`` or ``13:05:00`` (daily and
  larger bars have no ``<TIME>`` column); times are the broker's server time,
  read as UTC;
- plain: comma-separated ``time,open,high,low,close[,volume]``, the time as
  epoch seconds or ISO 8601 (``2024-01-02T13:05:00``, UTC unless it says;
  times with a zone are read row by row, more slowly).

The file is read in blocks of lines, each parsed by numpy at once; a block
that does not parse so (a bad row, ISO times, blank lines) is read again row
by row, which names the first bad line. A million rows take a few seconds. A bad row raises
`BarsError` naming the file and line. The bar size is inferred as the most
common gap between consecutive bars.
"""

import csv
import datetime
from typing import Callable, Optional, TextIO

import attrs
import numpy as np

from tradebot.broker import Candles

MT5_COLUMNS = ("<DATE>", "<TIME>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>", "<TICKVOL>", "<VOL>", "<SPREAD>")
PLAIN_COLUMNS = ("time", "open", "high", "low", "close", "volume")


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
    if len(t) == 0 or not np.all(np.diff(t) > 0):
        raise BarsError("bars: no bars, or times that do not rise")
    return Bars(symbol, t, o, h, l, c, _bar_seconds(t))


def read_bars(path: str, symbol: str, progress: Optional[Callable[[int], None]] = None) -> Bars:
    """The bars of the CSV file at `path` (either format); `progress` is
    called with the bytes read so far now and then. Raises `BarsError`."""
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as f:
            return _read(f, path, symbol, progress)
    except OSError as e:
        raise BarsError(f"{path}: cannot read: {e.strerror}")


#: About how many characters of the file are parsed at a time.
_BLOCK_CHARS = 1 << 22


def _read(f: TextIO, path: str, symbol: str, progress) -> Bars:
    header = f.readline()
    if not header.strip():
        raise BarsError(f"{path}: empty file")
    if header.lstrip().startswith("<"):
        names = [n.strip().upper() for n in header.strip().split("\t")]
        fast, slow = _mt5_parsers(path, names)
    else:
        names = [n.strip().lower() for n in header.strip().split(",")]
        fast, slow = _plain_parsers(path, names)
    blocks = []
    line_no = 1  # of the last line read
    read = len(header)
    last_time = -np.inf
    while True:
        lines = f.readlines(_BLOCK_CHARS)
        if not lines:
            break
        block = fast(lines)
        if block is None or not _valid(block, last_time):
            # the row-by-row reading finds and names the bad line
            block = np.array(list(_checked(slow(lines, line_no + 1), path, last_time)), dtype=np.float64)
            block = block.reshape(-1, 5)
        if len(block):
            blocks.append(block)
            last_time = block[-1, 0]
        line_no += len(lines)
        read += sum(len(line) for line in lines)
        if progress is not None:
            progress(read)
    if not blocks:
        raise BarsError(f"{path}: no bars")
    table = np.concatenate(blocks)
    columns = [np.ascontiguousarray(table[:, i]) for i in range(5)]
    return Bars(symbol, *columns, _bar_seconds(columns[0]))


def _valid(block: np.ndarray, last_time: float) -> bool:
    """Whether every row of `block` (after a row at `last_time`) is a bar:
    prices above 0, the low and high containing the open and close, times
    rising."""
    t, o, h, l, c = block.T
    if not np.all(np.isfinite(block)) or not np.all(l > 0):
        return False
    if not np.all((l <= np.minimum(o, c)) & (h >= np.maximum(o, c))):
        return False
    return bool(t[0] > last_time and np.all(np.diff(t) > 0))


def _checked(rows, path: str, last_time: float):
    for line_no, row in rows:
        if row[0] <= last_time:
            raise BarsError(f"{path}:{line_no}: time does not rise (bars must be oldest first, no duplicates)")
        o, h, l, c = row[1:]
        if not (l <= min(o, c) and h >= max(o, c)):
            raise BarsError(f"{path}:{line_no}: low {l} / high {h} do not contain open {o} and close {c}")
        last_time = row[0]
        yield row


def _loadtxt(lines, separator: str, columns) -> Optional[np.ndarray]:
    """numpy's own parse of `columns` of the lines as floats, one row per
    line, or None when some line does not parse so."""
    try:
        table = np.loadtxt(lines, delimiter=separator, usecols=columns, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        return None
    return table if len(table) == len(lines) else None


def _mt5_parsers(path: str, names):
    if names[0] != "<DATE>" or not set(("<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>")) <= set(names):
        raise BarsError(f"{path}:1: not an MT5 bars header (expected {' '.join(MT5_COLUMNS)})")
    has_time = "<TIME>" in names
    index = [names.index(n) for n in ("<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>")]

    def fast(lines):
        prices = _loadtxt(lines, "\t", index)
        if prices is None:
            return None
        try:
            heads = [line.split("\t", 2) for line in lines]
            days = {}
            clocks = {}
            seconds = np.empty(len(lines), dtype=np.float64)
            for row, head in enumerate(heads):
                day = days.get(head[0])
                if day is None:
                    day = days[head[0]] = _mt5_day(head[0])
                if has_time:
                    clock = clocks.get(head[1])
                    if clock is None:
                        clock = clocks[head[1]] = _mt5_clock(head[1])
                    day += clock
                seconds[row] = day
        except (ValueError, IndexError):
            return None
        return np.column_stack([seconds, prices])

    def slow(lines, first_line_no):
        for line_no, line in enumerate(lines, first_line_no):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < len(names):
                raise BarsError(f"{path}:{line_no}: {len(fields)} fields, the header has {len(names)}")
            try:
                seconds = _mt5_day(fields[0])
            except ValueError:
                raise BarsError(f"{path}:{line_no}: date {fields[0]!r} is not YYYY.MM.DD")
            if has_time:
                try:
                    seconds += _mt5_clock(fields[1])
                except ValueError:
                    raise BarsError(f"{path}:{line_no}: time {fields[1]!r} is not HH:MM[:SS]")
            o, h, l, c = (_number(fields[i], path, line_no, w) for i, w in zip(index, ("open", "high", "low", "close")))
            yield line_no, (seconds, o, h, l, c)

    return fast, slow


_EPOCH = datetime.datetime(1970, 1, 1)


def _mt5_day(text: str) -> float:
    return (datetime.datetime.strptime(text, "%Y.%m.%d") - _EPOCH).total_seconds()


def _mt5_clock(text: str) -> int:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(text)
    hh, mm = int(parts[0]), int(parts[1])
    ss = int(parts[2]) if len(parts) == 3 else 0
    if not (0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 60):
        raise ValueError(text)
    return hh * 3600 + mm * 60 + ss


def _plain_parsers(path: str, names):
    if names[:5] != list(PLAIN_COLUMNS[:5]):
        raise BarsError(
            f"{path}:1: unknown header {','.join(names)!r} (expected {','.join(PLAIN_COLUMNS)} or MT5's export)"
        )

    def fast(lines):
        table = _loadtxt(lines, ",", range(5))  # epoch-second times
        if table is not None:
            return table
        prices = _loadtxt(lines, ",", range(1, 5))
        times = _naive_iso_times([line.split(",", 1)[0] for line in lines])
        if prices is None or times is None:
            return None  # the slow way: zones, bad rows
        return np.column_stack([times, prices])

    def slow(lines, first_line_no):
        for line_no, fields in enumerate(csv.reader(lines), first_line_no):
            if not fields or not "".join(fields).strip():
                continue
            if len(fields) < 5:
                raise BarsError(f"{path}:{line_no}: {len(fields)} fields, expected at least 5")
            t = _time(fields[0], path, line_no)
            o, h, l, c = (_number(fields[i], path, line_no, w) for i, w in zip(range(1, 5), ("open", "high", "low", "close")))
            yield line_no, (t, o, h, l, c)

    return fast, slow


def _number(text: str, path: str, line_no: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BarsError(f"{path}:{line_no}: {what} {text.strip()!r} is not a number")
    if not np.isfinite(value) or value <= 0:
        raise BarsError(f"{path}:{line_no}: {what} {text.strip()!r} must be a price above 0")
    return value


def _naive_iso_times(texts) -> Optional[np.ndarray]:
    """Epoch seconds of ISO 8601 times without a zone (UTC), parsed by numpy
    at once; None if any has a zone or does not parse."""
    for text in texts:
        if "Z" in text or "+" in text or text.rfind("-") > 7:
            return None
    try:
        moments = np.array([t.strip() for t in texts], dtype="datetime64[s]")
    except ValueError:
        return None
    if np.isnat(moments).any():
        return None
    return moments.astype(np.int64).astype(np.float64)


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

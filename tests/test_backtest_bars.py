"""
Reading bars from CSV: MT5's export and the plain format, the bar size, and
bad rows named by their line.
"""

import numpy as np
import pytest

from tradebot.backtest.bars import BarsError, read_bars

MT5_HEADER = "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\r\n"


def write(tmp_path, text, name="bars.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_mt5_export_is_read_with_its_dates_times_and_bar_size(tmp_path):
    path = write(
        tmp_path,
        MT5_HEADER
        + "2024.01.02\t00:00:00\t1.10375\t1.10390\t1.10360\t1.10380\t120\t0\t10\r\n"
        + "2024.01.02\t00:05:00\t1.10380\t1.10400\t1.10370\t1.10395\t98\t0\t11\r\n"
        + "2024.01.02\t00:10\t1.10395\t1.10410\t1.10390\t1.10400\t76\t0\t10\r\n",
    )
    bars = read_bars(path, "EURUSD")
    assert len(bars) == 3
    assert list(bars.time) == [1704153600.0, 1704153900.0, 1704154200.0]  # 2024-01-02T00:00Z
    assert list(bars.open) == [1.10375, 1.10380, 1.10395]
    assert list(bars.high) == [1.10390, 1.10400, 1.10410]
    assert list(bars.low) == [1.10360, 1.10370, 1.10390]
    assert list(bars.close) == [1.10380, 1.10395, 1.10400]
    assert bars.bar_seconds == 300
    assert bars.symbol == "EURUSD"


def test_mt5_daily_export_has_no_time_column(tmp_path):
    path = write(
        tmp_path,
        "<DATE>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
        "2024.01.02\t2062.5\t2078.1\t2056.0\t2058.9\t1\t0\t20\n"
        "2024.01.03\t2058.9\t2065.0\t2030.2\t2041.6\t1\t0\t20\n",
    )
    bars = read_bars(path, "XAUUSD")
    assert list(bars.time) == [1704153600.0, 1704240000.0]
    assert bars.bar_seconds == 86400


@pytest.mark.parametrize(
    "times",
    [
        ("1704153600", "1704157200", "1704160800"),
        ("2024-01-02T00:00:00", "2024-01-02T01:00:00Z", "2024-01-02T03:00:00+01:00"),
    ],
)
def test_plain_format_takes_epoch_seconds_or_iso_times(tmp_path, times):
    rows = [f"{t},1.1,1.2,1.0,1.15,10" for t in times]
    path = write(tmp_path, "time,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    bars = read_bars(path, "EURUSD")
    assert list(bars.time) == [1704153600.0, 1704157200.0, 1704160800.0]
    assert bars.bar_seconds == 3600
    assert list(bars.close) == [1.15] * 3


@pytest.mark.parametrize(
    "row, complaint",
    [
        ("2024-01-02T00:02:00,1.1,1.2,1.0", "bars.csv:4: 4 fields, expected at least 5"),
        ("2024-01-02T00:02:00,1.1,1.2,1.0,abc,1", "bars.csv:4: close 'abc' is not a number"),
        ("yesterday,1.1,1.2,1.0,1.1,1", "bars.csv:4: time 'yesterday' is neither epoch seconds nor ISO 8601"),
        ("2024-01-02T00:02:00,1.1,1.05,1.0,1.1,1", "bars.csv:4: low 1.0 / high 1.05 do not contain open 1.1"),
        ("2024-01-02T00:01:00,1.1,1.2,1.0,1.1,1", "bars.csv:4: time does not rise"),
        ("2024-01-02T00:02:00,1.1,1.2,-1,1.1,1", "bars.csv:4: low '-1' must be a price above 0"),
    ],
)
def test_a_bad_plain_row_names_its_line(tmp_path, row, complaint):
    text = "time,open,high,low,close,volume\n2024-01-02T00:00:00,1.1,1.2,1.0,1.1,1\n2024-01-02T00:01:00,1.1,1.2,1.0,1.1,1\n"
    path = write(tmp_path, text + row + "\n")
    with pytest.raises(BarsError) as caught:
        read_bars(path, "EURUSD")
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    "row, complaint",
    [
        ("2024.13.02\t00:01:00\t1.1\t1.2\t1.0\t1.1\t1\t0\t10", "bars.csv:3: date '2024.13.02' is not YYYY.MM.DD"),
        ("2024.01.02\t25:00:00\t1.1\t1.2\t1.0\t1.1\t1\t0\t10", "bars.csv:3: time '25:00:00' is not HH:MM[:SS]"),
        ("2024.01.02\t00:01:00\t1.1\t1.2", "bars.csv:3: 4 fields, the header has 9"),
    ],
)
def test_a_bad_mt5_row_names_its_line(tmp_path, row, complaint):
    path = write(tmp_path, MT5_HEADER + "2024.01.02\t00:00:00\t1.1\t1.2\t1.0\t1.1\t1\t0\t10\r\n" + row + "\r\n")
    with pytest.raises(BarsError) as caught:
        read_bars(path, "EURUSD")
    assert complaint in str(caught.value)


def test_an_unknown_header_or_an_empty_file_is_refused(tmp_path):
    with pytest.raises(BarsError, match="unknown header"):
        read_bars(write(tmp_path, "date,o,h,l,c\n1,1,1,1,1\n"), "EURUSD")
    with pytest.raises(BarsError, match="no bars"):
        read_bars(write(tmp_path, "time,open,high,low,close\n"), "EURUSD")
    with pytest.raises(BarsError, match="cannot read"):
        read_bars(str(tmp_path / "missing.csv"), "EURUSD")


def test_a_long_file_is_read_whole_past_the_growth_of_its_arrays(tmp_path):
    n = 200_000
    rng = np.random.default_rng(3)
    close = np.round(1.1 + np.cumsum(rng.standard_normal(n)) * 1e-5, 5)
    lines = [f"{1_700_000_000 + 60 * i},{c:.5f},{c + 0.0001:.5f},{c - 0.0001:.5f},{c:.5f},1" for i, c in enumerate(close)]
    path = write(tmp_path, "time,open,high,low,close,volume\n" + "\n".join(lines) + "\n")
    seen = []
    bars = read_bars(path, "EURUSD", progress=seen.append)
    assert len(bars) == n
    assert np.array_equal(bars.close, close)
    assert bars.time[-1] == 1_700_000_000 + 60 * (n - 1)
    assert seen and seen == sorted(seen)


def test_a_bad_row_deep_in_a_long_file_names_its_own_line(tmp_path):
    lines = [f"{1_700_000_000 + 60 * i},1.1,1.2,1.0,1.1,1" for i in range(300_000)]
    lines[250_000] = "1715000000,1.1,1.2,1.0,oops,1"  # line 250002 of the file
    path = write(tmp_path, "time,open,high,low,close,volume\n" + "\n".join(lines) + "\n")
    with pytest.raises(BarsError) as caught:
        read_bars(path, "EURUSD")
    assert str(caught.value).endswith("bars.csv:250002: close 'oops' is not a number")


def test_iso_times_without_a_zone_read_as_utc_like_epoch_seconds(tmp_path):
    n = 5000
    epoch = [f"{1_700_000_000 + 60 * i},1.1,1.2,1.0,1.1,1" for i in range(n)]
    iso = [
        f"{np.datetime64(1_700_000_000 + 60 * i, 's')},1.1,1.2,1.0,1.1,1" for i in range(n)
    ]
    header = "time,open,high,low,close,volume\n"
    a = read_bars(write(tmp_path, header + "\n".join(epoch) + "\n", "epoch.csv"), "EURUSD")
    b = read_bars(write(tmp_path, header + "\n".join(iso) + "\n", "iso.csv"), "EURUSD")
    assert iso[0].startswith("2023-11-14T22:13:20,")
    assert np.array_equal(a.time, b.time)

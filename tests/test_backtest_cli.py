"""
``tradebot backtest`` end to end: a real process reads a CSV file and writes
the trade list, the summary and the equity curve.
"""

import csv
import os
import subprocess
import sys

import pytest

from tradebot import cli

from .test_backtest import SERIES, STRATEGY

START = 1_704_067_200  # 2024-01-01T00:00Z


def write_series(path, mt5=False):
    with open(path, "w", encoding="utf-8", newline="") as f:
        if mt5:
            f.write("<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\r\n")
            for i, (o, h, l, c) in enumerate(SERIES):
                f.write(f"2024.01.01\t00:{i:02d}:00\t{o:.5f}\t{h:.5f}\t{l:.5f}\t{c:.5f}\t1\t0\t10\r\n")
        else:
            f.write("time,open,high,low,close,volume\n")
            for i, (o, h, l, c) in enumerate(SERIES):
                f.write(f"{START + 60 * i},{o:.5f},{h:.5f},{l:.5f},{c:.5f},1\n")
    return str(path)


@pytest.mark.parametrize("mt5", [False, True], ids=["plain", "mt5"])
def test_the_command_writes_the_trades_the_summary_and_the_equity_curve(tmp_path, mt5):
    bars = write_series(tmp_path / "bars.csv", mt5)
    report = tmp_path / "report"
    process = subprocess.run(
        [
            sys.executable, "-m", "tradebot", "backtest", "--csv", bars, "--symbol", "EURUSD",
            "--strategy", STRATEGY, "--plan", "fixed", "--balance", "10000", "--spread", "10",
            "--commission", "7", "--report", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""  # no progress bar when stderr is not a terminal
    assert "trades: 3 (1 won, 2 lost)" in process.stdout
    assert "net profit: 1.69" in process.stdout  # 3.93 - 2.07 - 0.17
    assert "final phase: 1 step: 1 status: active" in process.stdout
    with open(report / "trades.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["side"], r["open_time"], r["open_price"], r["reason"], r["profit"]) for r in rows] == [
        ("BUY", "2024-01-01T00:04:00Z", "1.10030", "tp", "3.93"),
        ("SELL", "2024-01-01T00:07:00Z", "1.10300", "sl", "-2.07"),
        ("SELL", "2024-01-01T00:09:00Z", "1.10000", "end", "-0.17"),
    ]
    summary = (report / "summary.txt").read_text()
    assert "win rate: 33.33%" in summary and "profit factor: 1.75" in summary
    assert "max drawdown: 2.24 (0.02%)" in summary  # 10003.93 down to 10001.69
    with open(report / "equity.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(report / "equity.png") > 5000


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--symbol", "NOPE"], "backtest: --symbol: 'NOPE' is not one of"),
        (["--plan", "nope"], "backtest: --plan: unknown plan 'nope'"),
        (["--strategy", "nope"], "backtest: --strategy: unknown strategy"),
        (["--spread", "-1"], "backtest: --spread: '-1' is not a whole number of points"),
        (["--commission", "x"], "backtest: --commission: 'x' is not a number"),
        (["--balance", "0"], "backtest: --balance: '0' must be more than 0"),
        (["--csv", "missing.csv"], "backtest: missing.csv: cannot read"),
    ],
)
def test_a_bad_option_is_one_error_line_and_writes_nothing(tmp_path, capsys, args, complaint):
    bars = write_series(tmp_path / "bars.csv")
    options = {"--csv": bars, "--symbol": "EURUSD", "--strategy": STRATEGY, "--plan": "fixed"}
    options["--report"] = str(tmp_path / "report")
    for key, value in zip(args[::2], args[1::2]):
        options[key] = value if key != "--csv" else str(tmp_path / value)
    argv = ["backtest"] + [item for pair in options.items() for item in pair]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tradebot: error: " + complaint.replace("missing.csv", str(tmp_path / "missing.csv")))
    assert not (tmp_path / "report").exists()


def test_a_progress_bar_is_drawn_when_stderr_is_a_terminal(tmp_path):
    import pty

    bars = write_series(tmp_path / "bars.csv")
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run(
            [
                sys.executable, "-m", "tradebot", "backtest", "--csv", bars, "--symbol", "EURUSD",
                "--strategy", STRATEGY, "--plan", "fixed", "--report", str(tmp_path / "report"),
            ],
            stdout=subprocess.PIPE,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        os.close(terminal)
        terminal = None
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the writer is gone and all is read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if terminal is not None:
            os.close(terminal)
        os.close(controller)
    assert process.returncode == 0
    assert b"\rreading  [" in drawn
    assert b"\rtesting  [##############################] 100.0%" in drawn


def test_a_report_folder_that_cannot_be_made_is_one_error_line(tmp_path, capsys):
    bars = write_series(tmp_path / "bars.csv")
    (tmp_path / "taken").write_text("a file, not a folder")
    argv = ["backtest", "--csv", bars, "--symbol", "EURUSD", "--strategy", STRATEGY, "--plan", "fixed",
            "--report", str(tmp_path / "taken")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tradebot: error: backtest: --report: cannot write {tmp_path / 'taken'}: ")
    assert len(err.splitlines()) == 1

"""
``tradebot backtest``: the command line around the engine and the report.
"""

import os
import sys
from decimal import Decimal, InvalidOperation

import attrs

# The engine, numpy, matplotlib and the paper catalog are imported by `run`,
# so the other `tradebot` commands do not load them.

#: Where the report goes without --report.
DEFAULT_REPORT = "backtest-report"


class BacktestError(ValueError):
    """A backtest cannot run; the message is one readable line."""


def add_parser(commands) -> None:
    """Add the ``backtest`` subcommand to an argparse subparsers object."""
    parser = commands.add_parser("backtest", help="replay CSV bars through a strategy and a plan")
    parser.add_argument("--csv", required=True, metavar="FILE", help="bars: MT5's export or time,open,high,low,close")
    parser.add_argument("--symbol", required=True, help="a symbol of the paper catalog, e.g. EURUSD")
    parser.add_argument("--strategy", required=True, metavar="NAME", help="a strategy, e.g. ma_cross:fast=8,slow=21")
    parser.add_argument("--plan", required=True, metavar="FILE|NAME", help="a shipped plan name or a .toml file")
    parser.add_argument("--balance", default="10000", help="starting balance (default: 10000)")
    parser.add_argument("--spread", metavar="POINTS", help="spread in points (default: the symbol's)")
    parser.add_argument("--commission", default="0", metavar="PER_LOT", help="commission per lot and trade (default: 0)")
    parser.add_argument("--report", metavar="DIR", default=DEFAULT_REPORT, help=f"where the files go (default: {DEFAULT_REPORT})")


def _amount(text: str, option: str, allow_zero: bool) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BacktestError(f"{option}: {text!r} is not a number")
    if not value.is_finite() or value < 0 or (value == 0 and not allow_zero):
        raise BacktestError(f"{option}: {text!r} must be {'0 or more' if allow_zero else 'more than 0'}")
    return value


def run(args, out=None, err=None) -> int:
    """Run the backtest `args` ask for; print the summary to `out`, the
    progress to `err` (when it is a terminal). Raises `BacktestError`."""
    from tradebot.backtest import bars as bars_module
    from tradebot.backtest.engine import backtest
    from tradebot.backtest.report import summarize, summary_text, write_report
    from tradebot.brokers.paper import CATALOG
    from tradebot.plans.engine import PlanEngine
    from tradebot.plans.files import load_plan
    from tradebot.plans.plan import PlanError
    from tradebot.signals.names import strategy_from_name

    out = out or sys.stdout
    err = err or sys.stderr
    spec = CATALOG.get(args.symbol)
    if spec is None:
        raise BacktestError(f"--symbol: {args.symbol!r} is not one of {', '.join(sorted(CATALOG))}")
    if args.spread is not None:
        if not args.spread.isdigit():
            raise BacktestError(f"--spread: {args.spread!r} is not a whole number of points")
        spec = attrs.evolve(spec, spread=int(args.spread))
    balance = _amount(args.balance, "--balance", allow_zero=False)
    commission = _amount(args.commission, "--commission", allow_zero=True)
    try:
        strategy = strategy_from_name(args.strategy)
    except ValueError as e:
        raise BacktestError(f"--strategy: {e}")
    try:
        plan = load_plan(args.plan)
    except PlanError as e:
        raise BacktestError(f"--plan: {e}")
    bar = ProgressBar(err)
    try:
        size = _size(args.csv)
        bars = bars_module.read_bars(args.csv, args.symbol, progress=lambda done: bar.show("reading", done, size))
    except bars_module.BarsError as e:
        raise BacktestError(str(e))
    try:
        result = backtest(
            bars, strategy, PlanEngine(plan), spec, balance, commission,
            progress=lambda done, total: bar.show("testing", done, total),
        )
    except ValueError as e:
        raise BacktestError(str(e))
    finally:
        bar.done()
    summary = summarize(result)
    title = f"{args.symbol} {strategy.name} plan {plan.name}: {len(bars)} bars of {bars.bar_seconds}s"
    try:
        paths = write_report(args.report, result, summary, title)
    except OSError as e:
        raise BacktestError(f"--report: cannot write {e.filename or args.report}: {e.strerror}")
    out.write(title + "\n" + summary_text(summary))
    out.write("wrote " + ", ".join(paths) + "\n")
    return 0


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class ProgressBar:
    """A one-line progress bar on `stream`, drawn only when it is a terminal."""

    WIDTH = 30

    def __init__(self, stream):
        self.stream = stream
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self.drawn = False

    def show(self, what: str, done: int, total: int) -> None:
        """Draw `done` of `total`."""
        if not self.live or total <= 0:
            return
        part = min(1.0, done / total)
        filled = int(part * self.WIDTH)
        self.stream.write(f"\r{what:8} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {part * 100:5.1f}%")
        self.stream.flush()
        self.drawn = True

    def done(self) -> None:
        """End the line the bar was drawn on."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

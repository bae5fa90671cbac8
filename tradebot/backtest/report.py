"""
What a backtest shows: the summary figures, the trade list as CSV, the summary
as text, and the equity curve as a PNG with the plan's phase changes marked.
"""

import csv
import datetime
import os
from decimal import ROUND_HALF_EVEN, Decimal
from typing import List, Optional, Tuple

import attrs

from tradebot.broker import to_cents

TRADE_COLUMNS = (
    "number", "side", "volume", "open_time", "open_price", "stop_loss", "take_profit",
    "close_time", "close_price", "reason", "commission", "profit", "balance", "phase", "step", "note",
)
#: Plan event kinds counted as breaches.
BREACHES = ("daily_breach", "max_loss_breach", "phase_failed")
#: Plan event kinds marked on the equity curve as phase changes.
PHASE_CHANGES = ("phase_passed", "phase_failed")


@attrs.frozen
class Summary:
    """The figures of a backtest. `profit_factor` is gross profit over gross
    loss (None without a losing trade); `max_drawdown` the largest fall of the
    balance from a previous peak, in money and in percent of that peak."""

    bars: int
    trades: int
    wins: int
    losses: int
    win_rate: Optional[Decimal]
    gross_profit: Decimal
    gross_loss: Decimal
    profit_factor: Optional[Decimal]
    net_profit: Decimal
    start_balance: Decimal
    final_balance: Decimal
    max_drawdown: Decimal
    max_drawdown_pct: Decimal
    phase: int
    step: int
    status: str
    breaches: Tuple[str, ...]
    skipped: int


def _ratio(a: Decimal, b: Decimal) -> Decimal:
    return (a / b).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def summarize(result) -> Summary:
    """The `Summary` of an engine `Result`."""
    profits = [t.profit for t in result.trades]
    wins = [p for p in profits if p > 0]
    losses = [p for p in profits if p <= 0]
    gross_profit = sum(wins, Decimal(0))
    gross_loss = -sum(losses, Decimal(0))
    peak = result.start_balance
    drawdown, drawdown_pct = Decimal(0), Decimal(0)
    for trade in result.trades:
        peak = max(peak, trade.balance)
        fall = peak - trade.balance
        if fall > drawdown:
            drawdown = fall
            drawdown_pct = _ratio(fall * 100, peak) if peak > 0 else Decimal(0)
    breaches = tuple(f"{_when(e.at)} {e.kind}: {e.detail}" for e in result.events if e.kind in BREACHES)
    return Summary(
        bars=result.bars,
        trades=len(profits),
        wins=len(wins),
        losses=len(losses),
        win_rate=_ratio(Decimal(len(wins) * 100), Decimal(len(profits))) if profits else None,
        gross_profit=to_cents(gross_profit),
        gross_loss=to_cents(gross_loss),
        profit_factor=_ratio(gross_profit, gross_loss) if gross_loss > 0 else None,
        net_profit=to_cents(result.balance - result.start_balance),
        start_balance=result.start_balance,
        final_balance=result.balance,
        max_drawdown=to_cents(drawdown),
        max_drawdown_pct=drawdown_pct,
        phase=result.state.phase,
        step=result.state.step,
        status=result.state.status,
        breaches=breaches,
        skipped=len(result.skips),
    )


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def summary_text(summary: Summary) -> str:
    """The summary as lines of ``name: value``."""
    lines = [
        f"bars: {summary.bars}",
        f"trades: {summary.trades} ({summary.wins} won, {summary.losses} lost)",
        f"win rate: {'-' if summary.win_rate is None else f'{summary.win_rate}%'}",
        f"profit factor: {'-' if summary.profit_factor is None else summary.profit_factor}",
        f"gross profit: {summary.gross_profit}",
        f"gross loss: {summary.gross_loss}",
        f"net profit: {summary.net_profit}",
        f"balance: {summary.start_balance} -> {summary.final_balance}",
        f"max drawdown: {summary.max_drawdown} ({summary.max_drawdown_pct}%)",
        f"final phase: {summary.phase} step: {summary.step} status: {summary.status}",
        f"signals skipped: {summary.skipped}",
        f"breaches: {len(summary.breaches)}",
    ]
    lines.extend(f"  {b}" for b in summary.breaches)
    return "\n".join(lines) + "\n"


def write_trades(path: str, trades) -> None:
    """The trade list as CSV, one row per trade, times in ISO 8601 UTC."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(TRADE_COLUMNS)
        for t in trades:
            row = attrs.asdict(t)
            row["open_time"] = _iso(t.open_time)
            row["close_time"] = _iso(t.close_time)
            out.writerow(["" if row[c] is None else row[c] for c in TRADE_COLUMNS])


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def write_equity_png(path: str, result, title: str) -> None:
    """The balance after each trade over the bars' time span, phase
    changes as vertical lines and breaches as red crosses (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    times: List[datetime.datetime] = [_moment(result.start_time)]
    balances = [float(result.start_balance)]
    for t in result.trades:
        times.append(_moment(t.close_time))
        balances.append(float(t.balance))
    times.append(_moment(result.end_time))
    balances.append(float(result.balance))
    figure, axes = pyplot.subplots(figsize=(10, 4.5), dpi=100)
    try:
        axes.plot(times, balances, color="#1f6fb2", linewidth=1.2, label="balance")
        marked = set()
        for event in result.events:
            if event.kind in PHASE_CHANGES:
                label = None if event.kind in marked else event.kind.replace("_", " ")
                marked.add(event.kind)
                colour = "#2a9d3a" if event.kind == "phase_passed" else "#c0392b"
                axes.axvline(_moment(event.at), color=colour, linestyle="--", linewidth=0.9, label=label)
            if event.kind in BREACHES and event.kind != "phase_failed":
                label = None if "breach" in marked else "breach"
                marked.add("breach")
                axes.plot([_moment(event.at)], [float(event.equity)], "x", color="#c0392b", label=label)
        axes.set_title(title)
        axes.set_ylabel("balance")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        figure.autofmt_xdate()
        figure.tight_layout()
        figure.savefig(path)
    finally:
        pyplot.close(figure)


def _moment(at: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc)


def write_report(folder: str, result, summary: Summary, title: str) -> Tuple[str, str, str]:
    """trades.csv, summary.txt and equity.png in `folder` (made if missing);
    their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = tuple(os.path.join(folder, name) for name in ("trades.csv", "summary.txt", "equity.png"))
    write_trades(paths[0], result.trades)
    with open(paths[1], "w", encoding="utf-8") as f:
        f.write(title + "\n" + summary_text(summary))
    write_equity_png(paths[2], result, title)
    return paths

"""
The replay engine: bars in, the trades the live session would have made out.

It runs the live rules on past bars:

- after each completed bar, while no trade is open, the strategy's own
  ``evaluate`` sees the last `candles_needed` bars, as the live session's
  signal check does (`tradebot.trading.market`);
- a signal is filled at the next bar's open: the bid is the open, the ask the
  open plus the spread; the stops come from ``Signal.levels`` (the strategy's
  stops helper, widened to the live minimum of stops level plus spread) and
  the lot from the plan engine's ``entry``, given the loss of one lot at the
  stop, as `tradebot.loops` sizes it;
- an open trade is checked against each bar's high and low from its entry bar
  on, with the bid for a BUY and the ask (bid plus spread) for a SELL, like the
  paper market; a bar that reaches both the stop loss and the take profit
  counts as the stop loss (the worse case); the trade closes at the level,
  unless the bar opened beyond it (a gap, as after a weekend): then, as a
  real MT5 stop or take profit fills at the first price past its level, it
  closes at the bar's open (the bid for a BUY, the ask for a SELL), and a bar
  that opens beyond the take profit closes there even if it later reaches
  the stop loss;
- an order whose margin (`tradebot.brokers.paper.required_margin`) exceeds the
  balance is refused, as the paper broker refuses it;
- profit is the paper market's (`tradebot.brokers.paper.profit_in_quote`) in cents,
  less the commission per lot; a close moves the plan engine along.

Only one trade is open at a time (one symbol). While flat, a screen
(`tradebot.backtest.screens`) skips the bars on which the strategy cannot
signal; while a trade is open, numpy finds its exit bar without a Python step
per bar.
"""

from decimal import Decimal
from typing import Callable, List, Optional, Tuple

import attrs
import numpy as np

from tradebot.backtest.bars import Bars
from tradebot.backtest.screens import screen
from tradebot.broker import BUY, SymbolSpec, to_cents
from tradebot.brokers.paper import ACCOUNT_CURRENCY, profit_in_account, required_margin
from tradebot.plans import plan as plans
from tradebot.plans.engine import COMPLETED, FAILED
from tradebot.signals.strategies import StopsRejected

#: Close reason of a trade still open on the last bar, closed at its close.
END_OF_DATA = "end"


@attrs.frozen
class Trade:
    """One backtested trade. Times are bar times (epoch seconds): the bar
    whose open filled it and the bar in which it closed. `profit` is net of
    `commission`, in cents; `phase`/`step` where the plan stood at entry."""

    number: int
    side: str
    volume: Decimal
    open_time: float
    open_price: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    close_time: float
    close_price: Decimal
    reason: str
    commission: Decimal
    profit: Decimal
    balance: Decimal
    phase: int
    step: int
    note: Optional[str] = None


@attrs.frozen
class Skip:
    """A signal that made no trade, and why."""

    time: float
    side: str
    reason: str


@attrs.frozen(eq=False)
class Result:
    """What a backtest produced: the trades, the plan events, the signals
    skipped, the start and final balance, the final plan state, and the
    number and the first and last times of the bars."""

    trades: Tuple[Trade, ...]
    events: tuple
    skips: Tuple[Skip, ...]
    start_balance: Decimal
    balance: Decimal
    state: object
    bars: int
    start_time: float
    end_time: float


def account_profit(spec: SymbolSpec, side: str, volume, price_open, price_close) -> Decimal:
    """Unrounded profit in the account currency (USD), by the paper market's
    rule (`tradebot.brokers.paper.profit_in_account`): a USDxxx symbol's converted at
    the close price; a cross, which its own bars cannot convert, raises
    ValueError."""
    try:
        return profit_in_account(spec, side, volume, price_open, price_close)
    except ValueError:
        raise ValueError(
            f"{spec.name}: profit in {spec.profit_currency} cannot be converted to {ACCOUNT_CURRENCY} from its own bars"
        )


def backtest(
    bars: Bars,
    strategy,
    engine,
    spec: SymbolSpec,
    balance,
    commission_per_lot=Decimal(0),
    progress: Optional[Callable[[int, int], None]] = None,
    use_screen: bool = True,
    leverage=Decimal(100),
) -> Result:
    """Replay `bars` through `strategy` and the plan `engine` (the
    `PlanEngine` interface) on `spec` (its spread is the spread used),
    starting from `balance`. `progress(done, total)` is called now and then.
    `leverage` is the paper broker's (a trade whose margin exceeds the
    balance is skipped, as the paper broker refuses it). `use_screen` False
    evaluates every bar while flat (slow; the reference the screens are
    tested against). The engine's `update` is called at each bar evaluated
    and, for each trade, once with the worst floating equity it saw."""
    if getattr(strategy, "asynchronous", False):
        raise ValueError(f"strategy {strategy.name} asks a remote provider; it cannot be backtested")
    account_profit(spec, BUY, Decimal(1), Decimal(1), Decimal(1))  # the currency is usable
    balance = to_cents(balance)
    start_balance = balance
    commission_per_lot = Decimal(commission_per_lot)
    n = len(bars)
    needed = strategy.candles_needed
    point = spec.point
    spread_price = spec.spread * point
    spread_float = spec.spread * float(point)
    may_signal = screen(strategy, bars) if use_screen else None
    state = engine.start(balance, float(bars.time[0]))
    trades: List[Trade] = []
    events: list = []
    skips: List[Skip] = []
    i = needed  # the bar whose open a signal on bars [i - needed, i) fills at
    next_progress = 0
    while i < n:
        if progress is not None and i >= next_progress:
            progress(i, n)
            next_progress = i + 50000
        if may_signal is not None and not may_signal[i - 1]:
            # the next bar the strategy may signal on
            ahead = np.flatnonzero(may_signal[i : min(n, i + 4096)])
            i = i + 4096 if len(ahead) == 0 else i + int(ahead[0]) + 1
            continue
        now = float(bars.time[i])
        state, happened = engine.update(state, balance, balance, now, 0)
        events.extend(happened)
        if state.status in (FAILED, COMPLETED):
            break  # the plan opens no trade ever again: no later bar can change the outcome
        signal = strategy.evaluate(bars.candles(i - needed, i), spec)
        if signal is None:
            i += 1
            continue
        bid = spec.round_price(bars.open[i])
        entry_price = bid + spread_price if signal.side == BUY else bid
        try:
            stop_loss, take_profit = signal.levels(entry_price, spec)
        except StopsRejected as e:
            skips.append(Skip(now, signal.side, str(e)))
            i += 1
            continue
        loss_per_lot = -account_profit(spec, signal.side, Decimal(1), entry_price, stop_loss)
        entry = engine.entry(state, balance, balance, loss_per_lot, spec, now)
        if entry.lot is None:
            skips.append(Skip(now, signal.side, entry.reason or "skipped by the plan"))
            i += 1
            continue
        lot = entry.lot
        margin = required_margin(spec, lot, entry_price, leverage)
        if margin > balance:  # the paper broker's refusal: one trade open, so the free margin is the balance
            skips.append(Skip(now, signal.side, f"not enough money: margin {to_cents(margin)} needed, {balance} free"))
            i += 1
            continue
        state = engine.opened(state, now)
        entry_phase, entry_step = state.phase, state.step
        exit_bar, reason, gapped = _exit_bar(bars, i, signal.side, float(stop_loss), float(take_profit), spread_float)
        if exit_bar is None:
            exit_bar, reason = n - 1, END_OF_DATA
            close_bid = spec.round_price(bars.close[-1])
            close_price = close_bid if signal.side == BUY else close_bid + spread_price
        elif gapped:  # the first price past the level: the bar's open
            open_bid = spec.round_price(bars.open[exit_bar])
            close_price = open_bid if signal.side == BUY else open_bid + spread_price
        else:
            close_price = stop_loss if reason == "sl" else take_profit
        close_time = float(bars.time[exit_bar])
        # the worst floating equity while open, for the plan's loss limits
        if gapped:  # the bars before the gap, then the price it closed at
            worst_at, worst_price = _worst(bars, i, exit_bar - 1, signal.side, spread_float, spec, stop_loss)
            if (close_price < worst_price) if signal.side == BUY else (close_price > worst_price):
                worst_at, worst_price = exit_bar, close_price
        else:
            worst_at, worst_price = _worst(bars, i, exit_bar, signal.side, spread_float, spec, stop_loss)
        looks = [(float(bars.time[worst_at]), balance + to_cents(
            account_profit(spec, signal.side, lot, entry_price, worst_price)), None)]
        # a trading day that began while the trade was open starts from what
        # the account held at its reset instant: this balance, and the equity
        # at the open of the day's first bar (as the live reset timer reads it)
        close_day = engine.plan.day_of(close_time)
        if close_day > state.day:
            reset = engine.plan.day_start(close_day)
            first = min(int(np.searchsorted(bars.time, reset)), exit_bar)
            bid = spec.round_price(bars.open[first])
            equity = balance + to_cents(account_profit(
                spec, signal.side, lot, entry_price, bid if signal.side == BUY else bid + spread_price))
            looks.append((reset, equity, (balance, equity)))
        for when, equity, at_reset in sorted(looks, key=lambda look: look[0]):
            state, happened = engine.update(state, balance, equity, when, 1, at_reset=at_reset)
            events.extend(happened)
        commission = to_cents(commission_per_lot * lot)
        profit = to_cents(account_profit(spec, signal.side, lot, entry_price, close_price)) - commission
        balance = to_cents(balance + profit)
        result = plans.PROFIT if profit > 0 else plans.LOSS if profit < 0 else plans.BREAKEVEN
        trades.append(
            Trade(
                number=len(trades) + 1,
                side=signal.side,
                volume=lot,
                open_time=now,
                open_price=entry_price,
                stop_loss=stop_loss,
                take_profit=take_profit,
                close_time=close_time,
                close_price=close_price,
                reason=reason,
                commission=commission,
                profit=profit,
                balance=balance,
                phase=entry_phase,
                step=entry_step,
                note=entry.reason,
            )
        )
        state, happened = engine.closed(state, result, balance, close_time)
        events.extend(happened)
        i = exit_bar + 1
    if progress is not None:
        progress(n, n)
    return Result(
        tuple(trades), tuple(events), tuple(skips), start_balance, balance, state, n,
        float(bars.time[0]), float(bars.time[-1]),
    )


def _exit_bar(bars: Bars, start: int, side: str, stop: float, take: float, spread: float):
    """(index, "sl" or "tp", gapped) of the first bar from `start` whose
    range reaches a level, or (None, None, False). `gapped` is True when a
    bar after the entry bar opened beyond the level (it fills at the open);
    a bar opening beyond the take profit is a take profit, else a bar that
    reaches both is a stop loss. Searches in growing chunks, so a short trade
    costs little and a long one few steps."""
    n = len(bars)
    size = 32
    j = start
    while j < n:
        end = min(n, j + size)
        if side == BUY:
            hit_stop = bars.low[j:end] <= stop
            hit_take = bars.high[j:end] >= take
        else:  # a SELL closes at the ask
            hit_stop = bars.high[j:end] + spread >= stop
            hit_take = bars.low[j:end] + spread <= take
        hit = hit_stop | hit_take
        if hit.any():
            k = int(np.argmax(hit))
            index = j + k
            if index > start:  # the entry bar's open is the entry, inside the stops
                opening = float(bars.open[index]) + (0.0 if side == BUY else spread)
                beyond_take = opening >= take if side == BUY else opening <= take
                beyond_stop = opening <= stop if side == BUY else opening >= stop
                if beyond_take:
                    return index, "tp", True
                if beyond_stop:
                    return index, "sl", True
            return index, ("sl" if hit_stop[k] else "tp"), False
        j = end
        size *= 4
    return None, None, False


def _worst(bars: Bars, start: int, stop: int, side: str, spread: float, spec: SymbolSpec, stop_loss: Decimal):
    """(bar index, price) of the worst price a trade saw in bars [start,
    stop], no worse than its stop loss (which closes it)."""
    if side == BUY:
        k = int(np.argmin(bars.low[start : stop + 1]))
        return start + k, max(spec.round_price(bars.low[start + k]), stop_loss)
    k = int(np.argmax(bars.high[start : stop + 1]))
    return start + k, min(spec.round_price(bars.high[start + k] + spread), stop_loss)

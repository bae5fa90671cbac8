"""
The session's watch of its live trades: each open one reported, each pending one looked up
at the broker, each closed one completed (stored with the plan's new state, then told);
closes asked for (a breach, the operator) retried until the position is gone.

`WatchPart` is a part of `tradebot.loops.AccountSession`, which holds the state
its methods share.
"""

from typing import Optional

import attrs

from tradebot.broker import BrokerUnavailable, ClosedPosition, OrderRefused, Position, to_cents
from tradebot.plans import engine as risk
from tradebot.plans import plan as planfile
from tradebot.store import records
from tradebot.store.faults import DatabaseFault
from tradebot.store.records import TradeRecord
from tradebot.trading import messages
from tradebot.trading.failpoints import crash_point


@attrs.define
class Closing:
    """A close asked for a trade and not yet seen done: why, since when, how
    many tries, when the next is due, and the last refusal."""

    why: str
    since: float
    attempts: int = 0
    next_at: float = 0.0
    last_error: Optional[str] = None


#: The longest wait, in seconds, between two tries at a close the broker refused.
CLOSE_RETRY_MAX = 60.0


#: The broker's answer to a close of a position that is no longer open.
POSITION_CLOSED = 10036


#: Lookups in a row, one per monitor interval, that must find no trace of an
#: order before its trade is cancelled as never filled.
NOT_FOUND_LOOKS = 3


class WatchPart:
    """Methods of `tradebot.loops.AccountSession`: the watch of its live
    trades. Each open trade is reported with its price; each pending one is
    looked up at the broker by its comment; each closed one is completed
    (its result, the plan's new state and its message stored in one
    transaction, then sent); the closes a plan breach or the operator asks
    for are retried with back-off until the position is gone (`closing`).

    Uses the session's `account`, `_broker`, `_store`, `_clock`, `_plan`,
    `_plans`, `_trades`, `_placing`, `_misses`, `_metrics`, `_log`, and the
    other parts' `_publish`, `_publish_event`, `_record_fill`,
    `_balance_and_equity`, `_plan_update`."""

    async def _monitor(self):
        if self._unmarked:
            await self._mark_delivered(())
        for trade in list(self._trades.values()):
            if trade.id in self._placing:
                continue
            try:
                if trade.status == records.PENDING:
                    await self._reconcile(trade)
                else:
                    await self._watch(trade)
            except (BrokerUnavailable, DatabaseFault) as e:
                self._log.debug(
                    "watching trade {trade_id} ({symbol}): {reason}", trade_id=trade.id, symbol=trade.symbol, reason=e
                )
            except Exception:
                self._log.failure("watching trade {trade_id} ({symbol}) failed", trade_id=trade.id, symbol=trade.symbol)
        if self._trades:
            await self._plan_update()
        self._update_loops()

    async def _watch(self, trade: TradeRecord):
        position = await self._broker.position(trade.ticket)
        if position is not None:
            report = messages.active_trade(
                trade.id,
                trade.symbol,
                trade.side,
                trade.stop_loss,
                trade.take_profit,
                trade.open_price,
                trade.lot_size,
                position.current_price,
                position.profit,
            )
            self._latest_report[trade.id] = report
            self._publish(report)
            return
        closed = await self._broker.closed_position(trade.ticket)
        if closed is not None:
            await self._complete(trade, closed)

    async def _reconcile(self, trade: TradeRecord):
        """Settle a pending trade from what the broker knows of its order."""
        found = await self._broker.find_by_comment(trade.comment, since=trade.created_at)
        if found is None and self._misses.get(trade.id, 0) + 1 < NOT_FOUND_LOOKS:
            self._misses[trade.id] = self._misses.get(trade.id, 0) + 1
            return  # it may be on its way: look again at the next tick
        self._misses.pop(trade.id, None)
        if found is None:
            self._log.warn(
                "account {name}: order of trade {trade_id} ({symbol}) was never filled; cancelled",
                name=self.account.name,
                trade_id=trade.id,
                symbol=trade.symbol,
            )
            await self._store.mark_not_placed(trade.id, records.CANCELLED, "order never filled")
            self._count_trade("cancelled")
            del self._trades[trade.id]
            self._publish(messages.trade_not_placed(trade.symbol, "order never filled"))
            return
        # the clients saw the signal (message 5); now they learn the order was filled
        if isinstance(found, Position):
            await self._record_fill(trade, found)
            self._publish(messages.trade_placed(trade.symbol))
            return
        assert isinstance(found, ClosedPosition)
        opened = await self._record_fill(
            trade,
            Position(
                ticket=found.ticket,
                symbol=found.symbol,
                side=found.side,
                volume=found.volume,
                open_price=found.open_price,
                stop_loss=trade.stop_loss,
                take_profit=trade.take_profit,
                current_price=found.close_price,
                profit=found.profit,
                opened_at=found.opened_at,
                comment=found.comment,
            ),
        )
        self._publish(messages.trade_placed(trade.symbol))
        await self._complete(opened, found)

    def _count_trade(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.trades.labels(result=result).inc()

    async def _complete(self, trade: TradeRecord, closed: ClosedPosition):
        """Apply a closed trade's result: store it with the account's new
        phase, step and balance, then tell the clients; nothing if another
        path (the monitor, a close on a breach) completed it meanwhile."""
        await self._plan.lock.acquire()
        try:
            if trade.id not in self._trades:
                return
            await self._complete_locked(trade, closed)
        finally:
            self._plan.lock.release()
        self._update_loops()

    async def _complete_locked(self, trade: TradeRecord, closed: ClosedPosition):
        account = self.account
        # the client's result is the seed's: a close at exactly zero is a loss;
        # the plan's ladder tells a breakeven apart
        result = records.PROFIT if closed.profit > 0 else records.LOSS
        plan_result = planfile.PROFIT if closed.profit > 0 else planfile.LOSS if closed.profit < 0 else planfile.BREAKEVEN
        balance, equity = await self._balance_and_equity()
        balance = to_cents(balance)
        await self._plan.ensure(balance, account.phase, account.step)
        still_open = len([t for t in self._trades if t != trade.id])
        plan_state, plan_events = await self._plan.closed(plan_result, balance, equity, still_open, closed)
        phase, step = plan_state.phase, plan_state.step
        payload = messages.trade_completed(
            trade.id,
            trade.symbol,
            result,
            phase,
            step,
            trade.lot_size,
            trade.stop_loss,
            trade.take_profit,
            balance,
            closed.profit,
            closed.close_price,
        )
        crash_point("after_close", trade_id=trade.id, ticket=closed.ticket)
        completion = await self._store.complete_trade(
            trade.id,
            close_price=closed.close_price,
            closed_at=closed.closed_at,
            profit=closed.profit,
            result=result,
            close_reason=closed.reason,
            phase_after=phase,
            step_after=step,
            balance_after=balance,
            payload=payload,
            plan_state=plan_state,
            plan_events=plan_events,
        )
        await self._plan.stored(plan_state, completion.already_recorded)
        self.account = completion.account
        if not completion.already_recorded:
            self._count_trade(result)
        self._trades.pop(trade.id, None)
        self._latest_report.pop(trade.id, None)
        self.closing.pop(trade.id, None)
        self._log.info(
            "account {name}: trade {trade_id} ({symbol}) closed by {reason} at {price}, {result} {profit}; "
            "balance {balance}, phase {phase} step {step}",
            name=account.name,
            trade_id=trade.id,
            symbol=trade.symbol,
            reason=closed.reason,
            price=closed.close_price,
            result=result,
            profit=closed.profit,
            balance=completion.account.balance,
            phase=completion.account.phase,
            step=completion.account.step,
        )
        await self._publish_event(completion.event_id, completion.payload)

    def _to_close(self, state) -> list:
        """The open trades a breach asks to close, due now: every live open
        trade while the state is paused or failed under a phase with
        ``close_on_breach``, none otherwise; one already asked for is due
        again when its back-off has passed."""
        if state.status not in (risk.PAUSED_TODAY, risk.FAILED):
            return []
        if not self._plans(self.account.plan).phase_at(state.phase).close_on_breach:
            return []
        now = self._clock.seconds()
        return [
            t
            for t in self._trades.values()
            if t.status == records.OPEN
            and t.id not in self._placing
            and (t.id not in self.closing or self.closing[t.id].next_at <= now)
        ]

    async def _close_on_breach(self, state) -> None:
        """Close each trade `_to_close` names (see `close_trades`)."""
        trades = self._to_close(state)
        if trades and not any(t.id in self.closing for t in trades):
            self._log.warn(
                "account {name}: the plan was breached ({status}); closing {n} open trade(s)",
                name=self.account.name,
                status=state.status,
                n=len(trades),
            )
        await self.close_trades(trades, "the plan's loss limit was breached")

    async def close_trades(self, trades, why: str) -> None:
        """Ask the broker to close each of `trades` at the market, for `why`,
        until the position is gone: a close answered is completed at once
        (its result summed over every exit deal); one refused (a session
        break, a frozen price, a busy server, a part left open) or whose
        outcome is unknown is asked again after a back-off doubling from 1 s
        to `CLOSE_RETRY_MAX`, each try logged, and shows in `closing` (on
        /health and /metrics) until the trade completes; a position already
        gone is left to the monitor, which completes it. Never raises."""
        now = self._clock.seconds()
        for trade in trades:
            closing = self.closing.get(trade.id)
            if closing is None:
                closing = self.closing[trade.id] = Closing(why=why, since=now)
            closing.attempts += 1
            closing.next_at = now + min(CLOSE_RETRY_MAX, 2.0 ** (closing.attempts - 1))
            try:
                closed = await self._broker.close_position(trade.ticket)
            except OrderRefused as e:
                if e.code == POSITION_CLOSED:
                    closing.last_error = "already closed at the broker"
                    continue  # gone: the monitor completes it with its real result
                closing.last_error = e.reason
                self._log.warn(
                    "account {name}: closing trade {trade_id} ({symbol}) refused ({reason}); "
                    "trying again in {delay:g} s (attempt {n})",
                    name=self.account.name, trade_id=trade.id, symbol=trade.symbol, reason=e.reason,
                    delay=closing.next_at - now, n=closing.attempts,
                )
                continue
            except BrokerUnavailable as e:
                closing.last_error = str(e)
                self._log.warn(
                    "closing trade {trade_id} ({symbol}) has an unknown outcome ({reason}); the monitor looks "
                    "it up, and the close is asked again in {delay:g} s if it is still open",
                    trade_id=trade.id, symbol=trade.symbol, reason=e, delay=closing.next_at - now,
                )
                continue
            except Exception:
                closing.last_error = "unexpected error"
                self._log.failure(
                    "closing trade {trade_id} ({symbol}) has an unknown outcome; the monitor looks it up",
                    trade_id=trade.id, symbol=trade.symbol,
                )
                continue
            live = self._trades.get(trade.id)
            if live is None:
                continue  # the monitor completed it meanwhile
            try:
                await self._complete(live, closed)
            except DatabaseFault as e:  # still live: the monitor stores it later
                self._log.info("trade {trade_id} closed, result not stored yet: {error}", trade_id=trade.id, error=e)
            except Exception:
                self._log.failure("storing the result of closed trade {trade_id} failed", trade_id=trade.id)

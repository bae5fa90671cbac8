"""
The session's signal checks and the placement of a trade: a signal per symbol (a queued
alert first, else the strategy), the lot from the plan, the intent recorded before the
order, the fill recorded after it; positions found at the broker that no trade holds are
adopted.

`PlacementPart` is a part of `tradebot.loops.AccountSession`, which holds the state
its methods share.
"""

from decimal import Decimal

from tradebot.broker import BUY, BrokerUnavailable, OrderRefused, OrderRequest, Position
from tradebot.signals.strategies import StopsRejected
from tradebot.store import records
from tradebot.store.faults import DatabaseFault
from tradebot.store.records import TradeRecord
from tradebot.trading import messages
from tradebot.trading.failpoints import crash_point

#: What `AccountSession._place` returns when a signal's trade could not be
#: tried for a passing reason (no order was sent).
TRY_AGAIN = "try again"


def _reason(error: Exception) -> str:
    """A short readable reason for a client, never a traceback."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


class PlacementPart:
    """Methods of `tradebot.loops.AccountSession`: the signal checks and the
    placement of a trade. Each symbol without a live trade is checked (a
    queued alert first, else the strategy); a signal's lot comes from the
    plan; the intent is recorded before the order is sent and the fill after
    it, so no signal is traded twice; positions at the broker that no trade
    holds are adopted.

    Uses the session's `account`, `_broker`, `_store`, `_market`,
    `_strategy`, `_alerts`, `_plan`, `_trades`, `_placing`, `_log`, and
    the other parts' `_publish`, `_balance_and_equity`, `_open_risk`,
    `_plan_update`, `_plan_opened`, `_apply_plan_changes`, `_count_trade`."""

    async def _adopt(self):
        """Record and watch every open position of the account's at the
        broker that no live trade holds (an order given up on whose position
        exists after all, or a store restored from an older copy)."""
        if not self._broker.available:
            return  # done when the broker becomes available
        try:
            positions = await self._broker.open_positions()
        except BrokerUnavailable as e:
            self._log.info("account {name}: open positions not checked: {reason}", name=self.account.name, reason=e)
            return
        live = list(self._trades.values())
        tickets = {t.ticket for t in live if t.ticket is not None}
        comments = {t.comment for t in live}
        for position in positions:
            if position.ticket in tickets or position.comment in comments:
                continue
            trade = await self._store.adopt_position(self.account.id, position, self.account.phase, self.account.step)
            if trade is None:
                continue
            self._trades[trade.id] = trade
            self._log.warn(
                "account {name}: adopted open position {ticket} ({side} {lot} {symbol}, comment {comment!r}) "
                "as trade {trade_id}",
                name=self.account.name,
                ticket=position.ticket,
                side=position.side,
                lot=position.volume,
                symbol=position.symbol,
                comment=position.comment,
                trade_id=trade.id,
            )
        self._update_loops()

    async def _check_signals(self):
        if self._unmarked:
            await self._mark_delivered(())
        if self._checking or not self._broker.available or not self._store.health.writable:
            return
        self._checking = True
        try:
            account = await self._store.account_by_id(self.account.id)
            if account is not None:
                changed = account.plan_changed_at != self.account.plan_changed_at
                self.account = account
                if changed:
                    await self._apply_plan_changes()
            # a position that turned up at the broker (an order given up on
            # that filled after all) makes its symbol busy before any new order
            await self._adopt()
            if not self._has_room:
                return
            busy = {t.symbol for t in self._trades.values()}
            for symbol in self.account.symbols:
                if not (self._active and self._has_room and self.running and self._store.health.writable):
                    break
                if symbol in busy:
                    continue
                self._publish(messages.checking(symbol))
                try:
                    spec = await self._broker.symbol(symbol)
                    signal = None
                    if self._alerts is not None:
                        signal = await self._alerts.signal(
                            self.account.id, symbol, spec, self._market, self._broker, self._strategy
                        )
                    from_alert = signal is not None
                    if signal is None:
                        signal = await self._market.signal(self._broker, symbol, spec, self._strategy)
                except BrokerUnavailable as e:
                    self._log.info("signal checks paused: {reason}", reason=e)
                    break
                except Exception:
                    self._log.failure("signal check of {symbol} failed", symbol=symbol)
                    continue
                if signal is None:
                    continue
                self._publish(messages.signal(signal.side, symbol))
                placed = await self._place(symbol, spec, signal)
                if placed is True:
                    busy.add(symbol)
                if from_alert:
                    await self._settle_alert(symbol, placed)
            if self.running and self._broker.available:
                await self._plan_update()  # a new day, a target reached with no signal
        finally:
            self._checking = False
            self._update_loops()

    async def _settle_alert(self, symbol, placed) -> None:
        """An alert's trade was tried (`placed` True or False: it is used up)
        or could not be (`TRY_AGAIN`: it is queued again for the next check)."""
        if placed is TRY_AGAIN:
            try:
                await self._alerts.release(self.account.id, symbol)
            except Exception:
                self._log.failure("the alert for {symbol} could not be queued again", symbol=symbol)
        else:
            self._alerts.tried(self.account.id, symbol)

    async def _place(self, symbol, spec, signal):
        """Size, record and send the order for a signal: True if it opened;
        False if no trade came of it (skipped, refused, or its outcome is
        being looked up); `TRY_AGAIN` if it could not be tried for a passing
        reason (the broker away while sizing, the database refusing the
        trade's record, the session stopping), with no order sent."""
        account = self.account
        try:
            tick = await self._broker.tick(symbol)
            entry = tick.ask if signal.side == BUY else tick.bid
            # no closer than the broker's stops level from the closing price, so
            # the lot is sized on the stop the broker will accept
            stop_loss, take_profit = signal.levels(entry, spec)
            loss_per_lot = -await self._broker.calc_profit(
                signal.side, symbol, Decimal(1), entry, stop_loss
            )
            balance, equity = await self._balance_and_equity()
            open_risk = await self._open_risk()
            await self._plan.lock.acquire()
            try:
                await self._plan.ensure(balance, account.phase, account.step)
                state = await self._plan.update(balance, equity, len(self._trades))
                entry = self._plan.entry(balance, equity, Decimal(loss_per_lot), spec, open_risk)
            finally:
                self._plan.lock.release()
        except (BrokerUnavailable, StopsRejected) as e:
            self._log.warn("sizing a {side} trade on {symbol}: {reason}", side=signal.side, symbol=symbol, reason=e)
            self._publish(messages.trade_not_placed(symbol, _reason(e)))
            return TRY_AGAIN if isinstance(e, BrokerUnavailable) else False
        except Exception as e:
            self._log.failure("sizing a {side} trade on {symbol} failed", side=signal.side, symbol=symbol)
            self._publish(messages.trade_not_placed(symbol, _reason(e)))
            return TRY_AGAIN if isinstance(e, DatabaseFault) else False
        if entry.lot is None:
            self._log.info("{side} {symbol} skipped: {reason}", side=signal.side, symbol=symbol, reason=entry.reason)
            self._publish(messages.trade_skipped(symbol, entry.reason))
            return False
        if entry.reason is not None:
            self._log.info("{side} {symbol}: {reason}", side=signal.side, symbol=symbol, reason=entry.reason)
        lot = entry.lot

        if not self.running:
            return TRY_AGAIN  # the session stopped while the order was sized: no new order
        try:
            # the plan state the limits were measured from is stored before any order
            await self._plan.lock.acquire()
            try:
                await self._plan.save()
            finally:
                self._plan.lock.release()
            trade = await self._store.record_intent(
                account.id, symbol, signal.side, lot, stop_loss, take_profit, state.phase, state.step
            )
        except DatabaseFault as e:  # nothing recorded, so no order
            self._log.warn("{side} {symbol} not placed: {error}", side=signal.side, symbol=symbol, error=e)
            self._publish(messages.trade_not_placed(symbol, e.reason))
            return TRY_AGAIN
        self._trades[trade.id] = trade
        self._placing.add(trade.id)
        crash_point("after_intent", trade_id=trade.id)
        try:
            position = await self._broker.open_position(
                OrderRequest(
                    symbol=symbol,
                    side=signal.side,
                    volume=lot,
                    stop_loss=stop_loss,
                    take_profit=take_profit,
                    comment=trade.comment,
                    magic=account.id,
                )
            )
        except OrderRefused as e:
            self._placing.discard(trade.id)
            self._log.warn(
                "account {name}: {side} {symbol} refused: {reason}",
                name=account.name,
                side=signal.side,
                symbol=symbol,
                reason=e.reason,
            )
            await self._store.mark_not_placed(trade.id, records.REFUSED, e.reason)
            self._count_trade("refused")
            del self._trades[trade.id]
            self._publish(messages.trade_not_placed(symbol, e.reason))
            return False
        except BrokerUnavailable as e:
            self._placing.discard(trade.id)
            self._log.warn(
                "order for trade {trade_id} ({symbol}) has an unknown outcome ({reason}); it will be looked up",
                trade_id=trade.id,
                symbol=symbol,
                reason=e,
            )
            return False
        except Exception:
            self._placing.discard(trade.id)
            self._log.failure(
                "order for trade {trade_id} ({symbol}) has an unknown outcome; it will be looked up",
                trade_id=trade.id,
                symbol=symbol,
            )
            return False
        self._placing.discard(trade.id)
        crash_point("after_order", trade_id=trade.id, ticket=position.ticket)
        await self._record_fill(trade, position)
        self._publish(messages.trade_placed(symbol))
        return True

    async def _record_fill(self, trade: TradeRecord, position: Position):
        self._trades[trade.id] = trade  # keep it live whatever the store says
        opened = await self._store.mark_open(
            trade.id,
            position.ticket,
            position.open_price,
            position.volume,
            position.stop_loss,
            position.take_profit,
            position.opened_at,
        )
        self._trades[trade.id] = opened
        await self._plan_opened()
        self._log.info(
            "account {name}: trade {trade_id} opened, {side} {lot} {symbol} at {price} (ticket {ticket})",
            name=self.account.name,
            trade_id=trade.id,
            side=trade.side,
            lot=position.volume,
            symbol=trade.symbol,
            price=position.open_price,
            ticket=position.ticket,
        )
        return opened

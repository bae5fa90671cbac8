"""
Trading sessions: one service per account, owning its loops.

An `AccountSession` runs two `LoopingCall`s for one account:

- the signal loop, every signal interval while the session is active (a
  connection streams, or the account is always-on) and has room for a trade:
  checks each symbol without an open trade for a signal, and places the trade;
- the monitor loop, every monitor interval while a trade is live: reports each
  open trade with its current price, and records and reports each one that
  closed.

Connections are *attached* (open) and may be *streaming* (sent ping). Messages
go to the streaming ones, each encoded and framed once for all of them. A
completion is stored before any client sees it; one that no connection
received is delivered when a connection next starts streaming.

`SessionManager` is the parent service: it creates a session when an account's
first connection arrives, resumes at start-up every account with a live trade
(or set always-on), and drops sessions that have nothing left to do.

The order of a placement never changes: the intent is recorded (a pending
trade with the comment its order carries), the order is sent, the fill is
recorded. A pending trade whose outcome is unknown (the order call failed, or
the server stopped) is looked up at the broker by its comment before anything
else is done with it, so no signal is ever traded twice. A stopping session
starts no new order and waits (up to `STOP_WAIT`) for its work under way, so
a fill or a result on its way to the store gets there before the store closes.

A breach of the plan's loss limits under a phase with ``close_on_breach``
closes each live open trade at the broker, once; its result is completed as
any other, and a close whose outcome is unknown is left to the monitor loop.

While the database takes no writes (`tradebot.store.faults`), no new trade is
placed and the clients are told once each way (trading paused, resumed). A
trade whose fill or result cannot be stored stays live and is stored at a
later monitor tick; its result is sent only once stored.
"""

import functools
from decimal import Decimal
from typing import Callable, Dict, Optional

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tradebot.trading import messages
from tradebot.store import records
from tradebot.plans import engine as risk
from tradebot.store.faults import DatabaseFault
from tradebot.trading.failpoints import crash_point
from tradebot.broker import (
    BUY,
    BrokerUnavailable,
    ClosedPosition,
    OrderRefused,
    OrderRequest,
    Position,
    to_cents,
)
from tradebot.plans import plan as planfile
from tradebot.plans.plan import TRAILING, PlanError
from tradebot.trading.planstate import PlanKeeper
from tradebot.store.records import Account, TradeRecord
from tradebot.signals.strategies import StopsRejected


class AccountLogger(Logger):
    """A Logger whose every event carries ``account``: the account's name."""

    def __init__(self, account_name: str, namespace: Optional[str] = None):
        super().__init__(namespace=namespace)
        self.account_name = account_name

    def emit(self, level, format=None, **kwargs):
        kwargs.setdefault("account", self.account_name)
        super().emit(level, format, **kwargs)


class Subscriber:
    """What a session needs of a connection (the websocket protocol in
    production, a recorder in tests)."""

    def send_frame(self, frame, supersedes=None, written=None) -> None:
        """Write one encoded message. `supersedes` (a key, or None) marks a
        message that a later one with the same key makes stale: a connection
        that is behind may drop the older one. `written` (if given) is called
        once the frame is written to the connection, at once or when a client
        that was behind catches up; never if the frame is dropped."""
        raise NotImplementedError


def supersede_key(message: dict):
    """The key under which a newer message makes `message` stale, or None for
    a message that must always arrive: a trade's report (message 2) is
    superseded by its next report, a symbol's "checking" by its next one."""
    text = message.get("message")
    data = message.get("data") or {}
    if text == messages.ACTIVE_TRADE:
        return ("active", data.get("trade_id"))
    if text == messages.CHECKING:
        return ("checking", data.get("symbol"))
    return None


@defer.inlineCallbacks
def _guarded(log, what: str, fn, *args):
    """Run a loop body and log, never raise, any error: a `LoopingCall` whose
    body fails stops for good."""
    try:
        yield defer.ensureDeferred(fn(*args))
    except DatabaseFault as e:  # the store has said so once already
        log.info("{what} stopped: {error}; the loop carries on", what=what, error=e)
    except Exception:
        log.failure("{what} failed; the loop carries on", what=what)


class _Loop:
    """A restartable `LoopingCall` around a guarded body.

    Each start makes a new LoopingCall, so a body still under way from before
    a stop can never schedule a second round beside the new one. Each round's
    Deferred goes through `track` (the session counts it as work under way)."""

    def __init__(self, log, what: str, body, clock, track=lambda d: d):
        self._log = log
        self._what = what
        self._body = body
        self._clock = clock
        self._track = track
        self._call: Optional[LoopingCall] = None

    @property
    def running(self) -> bool:
        return self._call is not None and self._call.running

    def start(self, interval: float, now: bool) -> None:
        call = LoopingCall(lambda: self._track(_guarded(self._log, self._what, self._body)))
        call.clock = self._clock
        self._call = call
        call.start(interval, now=now).addErrback(
            lambda f: self._log.failure("{what} loop ended", f, what=self._what)
        )

    def stop(self) -> None:
        if self.running:
            self._call.stop()


class AccountSession(Service):
    """The trading session of one account, shared by all its connections."""

    _log = Logger()

    def __init__(
        self,
        account: Account,
        store,
        broker,
        market,
        strategy,
        plans,
        clock,
        signal_interval: float,
        monitor_interval: float,
        encode: Callable[[dict], object] = messages.encode,
        on_idle: Optional[Callable[[], None]] = None,
        metrics=None,
        alerts=None,
    ):
        self.name = f"account-{account.id}"
        self._alerts = alerts  # queued webhook alerts (tradebot.trading.alerts), taken before the strategy
        self._metrics = metrics
        self.account = account
        self._store = store
        self._broker = broker
        self._market = market
        self._strategy = strategy
        self._plans = plans
        self._clock = clock
        self._signal_interval = signal_interval
        self._monitor_interval = monitor_interval
        self._encode = encode

        self._attached = set()
        # streaming connection -> ids of the events it has been sent
        self._streaming: Dict[object, set] = {}
        # live trades (pending or open), by id
        self._trades: Dict[int, TradeRecord] = {}
        # the latest message 2 of each open trade, for a connection that starts streaming
        self._latest_report: Dict[int, dict] = {}
        self._placing: set = set()  # trade ids whose order call is under way
        self._misses: Dict[int, int] = {}  # pending trade id -> lookups that found nothing
        #: trade id -> the close asked for it and not yet seen done (retried until it is)
        self.closing: Dict[int, Closing] = {}
        self._unmarked: set = set()  # ids of events sent but not yet recorded as delivered
        self._marking: set = set()  # ids of events whose delivery is being recorded
        self._checking = False
        self._broker_lost = False  # the clients were told the broker went away
        self._ready = False
        self.ready = defer.Deferred()

        self._on_idle = on_idle
        self._under_way = set()  # Deferreds of the guarded work running now
        # every line carries the account's name (a field of its own in JSON logs)
        self._log = log = AccountLogger(account.name, namespace=type(self)._log.namespace)
        # the plan's state: its limits gate every entry (tradebot.plans.engine)
        self._plan = PlanKeeper(account.id, lambda: self._plans(self.account.plan), store, clock, log)
        self._signal_loop = _Loop(log, "signal check", self._check_signals, clock, self._track)
        self._monitor_loop = _Loop(log, "trade monitor", self._monitor, clock, self._track)

    # -- service -----------------------------------------------------------

    def startService(self):
        """Load the account's live trades and start watching them; `ready`
        fires when done."""
        super().startService()
        self._broker.watch(self._broker_changed)
        self._store.health.watch(self._store_changed)
        d = defer.ensureDeferred(self._load())

        def _loaded(_):
            self._ready = True
            self._update_loops()
            self._arm_reset()
            return self

        def _failed(failure):
            self._log.failure("session {name} could not load its trades", failure, name=self.account.name)
            self._ready = True
            self._update_loops()
            return self

        d.addCallbacks(_loaded, _failed)
        d.chainDeferred(self.ready)

    async def _load(self):
        for trade in await self._store.live_trades(self.account.id):
            self._trades[trade.id] = trade
        if self._trades:
            self._log.info(
                "account {name}: resuming {n} live trade(s)",
                name=self.account.name,
                n=len(self._trades),
            )
        await self._adopt()

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

    def stopService(self):
        """Stop both loops and start nothing new; a Deferred that fires once
        the work under way (an order whose fill is to be recorded, a result
        being stored) has finished, or after `STOP_WAIT` seconds. Live trades
        stay recorded for the next start."""
        super().stopService()
        self._plan.disarm()
        self._broker.unwatch(self._broker_changed)
        self._store.health.unwatch(self._store_changed)
        self._signal_loop.stop()
        self._monitor_loop.stop()
        if not self._under_way:
            return defer.succeed(None)
        finished = defer.Deferred()

        def _gave_up():
            self._log.warn(
                "account {name}: stopped with work still under way after {seconds:g} s",
                name=self.account.name,
                seconds=STOP_WAIT,
            )
            finished.callback(None)

        timer = self._clock.callLater(STOP_WAIT, _gave_up)

        def _done(_):
            if timer.active():
                timer.cancel()
                finished.callback(None)

        defer.DeferredList(list(self._under_way)).addCallback(_done)
        return finished

    def _track(self, d):
        """`d` (guarded work, which never fails) is under way until it fires."""
        self._under_way.add(d)

        def _finished(result):
            self._under_way.discard(d)
            return result

        return d.addBoth(_finished)

    def _broker_changed(self, available: bool, reason: str) -> None:
        """Tell the clients once that the broker went away, once that it is
        back; a first connection that simply succeeds is not news."""
        if not available:
            self._broker_lost = True
            self._publish(messages.broker_unavailable(reason))
        elif self._broker_lost:
            self._broker_lost = False
            self._publish(messages.broker_available())
        if available and self._ready:
            self._track(_guarded(self._log, "adopting open positions", self._adopt))
        self._update_loops()

    def _store_changed(self, writable: bool, reason: str) -> None:
        """Tell the clients once that trading paused because the database
        takes no writes, once that it resumed."""
        if writable:
            self._publish(messages.trading_resumed())
            self._track(_guarded(self._log, "recording delivered completions", self._mark_delivered, ()))
        else:
            self._publish(messages.trading_paused(reason))
        self._update_loops()

    # -- connections ---------------------------------------------------------

    def attach(self, connection) -> None:
        """An open connection of this account; it gets nothing until it streams."""
        self._attached.add(connection)

    def detach(self, connection) -> None:
        """A connection closed."""
        self._attached.discard(connection)
        self._streaming.pop(connection, None)
        self._update_loops()

    def start_streaming(self, connection):
        """Send this connection the session's messages from now on (ping).
        It gets the open trades and any undelivered completion at once.
        Returns a Deferred that fires when the catch-up has been sent."""
        if connection in self._streaming:
            return defer.succeed(None)
        self._attached.add(connection)
        self._streaming[connection] = set()
        for report in list(self._latest_report.values()):
            self._send(connection, self._encode(report), supersede_key(report))
        if not self._broker.available and self._broker.settled:
            reason = getattr(self._broker, "unavailable_reason", "")
            self._send(connection, self._encode(messages.broker_unavailable(reason)))
        if not self._store.health.writable:
            self._send(connection, self._encode(messages.trading_paused(self._store.health.fault.reason)))
        d = self._track(_guarded(self._log, "delivering stored completions", self._deliver_pending, connection))
        d.addCallback(lambda _: self._update_loops())
        return d

    def stop_streaming(self, connection) -> None:
        """Send this connection nothing more until its next ping (stop)."""
        self._streaming.pop(connection, None)
        self._update_loops()

    @property
    def streaming_count(self) -> int:
        """How many connections stream this session."""
        return len(self._streaming)

    @property
    def idle(self) -> bool:
        """True when nothing is attached, nothing is live and the account does
        not trade alone: the session may be dropped."""
        return not self._attached and not self._trades and not self.account.always_on and not self._unmarked

    @property
    def live_trades(self):
        """The live trade records, by id."""
        return dict(self._trades)

    async def _deliver_pending(self, connection):
        pending = await self._store.pending_events(self.account.id)
        sent = self._streaming.get(connection)
        if sent is None:
            return
        for event in pending:
            if event.id not in sent and event.id not in self._unmarked:
                sent.add(event.id)
                self._send(connection, self._encode(event.payload), written=functools.partial(self._written, event.id))

    def _written(self, event_id: int) -> None:
        """An event's frame was written to a client's connection: record it
        delivered, once however many connections it went to. (A frame held
        back for a client that is behind counts only once written, so one
        dropped with that client stays pending for the account's next
        connection.)"""
        if event_id in self._marking:
            return
        self._marking.add(event_id)
        crash_point("after_delivery", event_ids=event_id)
        marked = self._track(_guarded(self._log, "recording a delivered completion", self._mark_delivered, [event_id]))
        marked.addBoth(lambda _: self._marking.discard(event_id))

    async def _mark_delivered(self, event_ids) -> None:
        """Record that these events reached a client, with any whose record
        failed before. Until recorded they count as delivered here (no
        connection gets them again); never raises."""
        self._unmarked.update(event_ids)
        ids = sorted(self._unmarked)
        if not ids:
            return
        try:
            await self._store.mark_delivered(ids)
        except DatabaseFault as e:
            self._log.info("events {ids} were sent; recording it waits: {error}", ids=ids, error=e)
            return
        except Exception:
            self._log.failure("recording events {ids} as delivered failed; tried again later", ids=ids)
            return
        self._unmarked.difference_update(ids)

    # -- publishing ----------------------------------------------------------

    def _publish(self, message: dict) -> int:
        """Send a message to every streaming connection, framed once; returns
        how many it went to."""
        if not self._streaming:
            return 0
        frame = self._encode(message)
        key = supersede_key(message)
        for connection in list(self._streaming):
            self._send(connection, frame, key)
        return len(self._streaming)

    def _send(self, connection, frame, supersedes=None, written=None) -> None:
        if self._metrics is not None:
            self._metrics.messages_sent.inc()
        try:
            connection.send_frame(frame, supersedes, written)
        except Exception:
            self._log.failure("sending to a connection of {name} failed", name=self.account.name)

    async def _publish_event(self, event_id: int, payload: dict):
        frame = None
        for connection, sent in list(self._streaming.items()):
            if event_id in sent:
                continue
            sent.add(event_id)
            frame = frame or self._encode(payload)
            self._send(connection, frame, written=functools.partial(self._written, event_id))

    # -- loop control --------------------------------------------------------

    @property
    def _active(self) -> bool:
        return bool(self._streaming) or (self.account.always_on and not self.account.revoked)

    @property
    def _has_room(self) -> bool:
        return len(self._trades) < self.account.max_open_trades

    def _update_loops(self) -> None:
        """Start or stop each loop to match what the session has to do."""
        running = self.running and self._ready
        want_signals = running and self._active and self._has_room
        if want_signals and not self._signal_loop.running:
            self._signal_loop.start(self._signal_interval, now=True)
        elif not want_signals and self._signal_loop.running:
            self._signal_loop.stop()
        want_monitor = running and bool(self._trades)
        if want_monitor and not self._monitor_loop.running:
            self._monitor_loop.start(self._monitor_interval, now=False)
        elif not want_monitor and self._monitor_loop.running:
            self._monitor_loop.stop()
        if running and self.idle and self._on_idle is not None:
            self._clock.callLater(0, self._on_idle)

    # -- signals and placement -------------------------------------------------

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

    # -- monitoring ------------------------------------------------------------

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

    # -- the plan ----------------------------------------------------------------

    async def _balance_and_equity(self):
        """The broker's balance, and the account's equity: the balance with
        the floating result of every position on the account (a person's or
        another program's too, as a prop firm counts them)."""
        balance = await self._broker.balance()
        return balance, await self._broker.equity()

    async def _open_risk(self) -> Decimal:
        """What the trades open now would still lose if each reached its
        stop loss: from each one's floating result to its result at the stop."""
        if not any(t.status == records.OPEN for t in self._trades.values()):
            return Decimal(0)
        mine = {t.ticket for t in self._trades.values() if t.ticket is not None}
        risk = Decimal(0)
        for position in await self._broker.open_positions():
            if position.ticket not in mine:
                continue
            at_stop = await self._broker.calc_profit(
                position.side, position.symbol, position.volume, position.open_price, position.stop_loss
            )
            risk += max(Decimal(0), position.profit - to_cents(at_stop))
        return risk

    def _arm_reset(self) -> None:
        """Have the plan read the account at each trading day's reset instant,
        when its limits count from the day's start."""
        try:
            plan = self._plans(self.account.plan)
        except PlanError:
            return  # logged where the plan is used
        if any(p.max_daily_loss_pct is not None or p.max_loss_mode == TRAILING for p in plan.phases):
            self._plan.arm(self._balance_and_equity, self._plan_update)

    async def _plan_update(self) -> bool:
        """Bring the plan state up to date (day rollover, breaches, target)
        and store it; False (logged) if the broker or the store cannot say."""
        try:
            balance, equity = await self._balance_and_equity()
            await self._plan.lock.acquire()
            try:
                await self._plan.ensure(balance, self.account.phase, self.account.step)
                state = await self._plan.update(balance, equity, len(self._trades))
            finally:
                self._plan.lock.release()
        except (BrokerUnavailable, DatabaseFault, PlanError) as e:
            self._log.info("plan state not updated: {reason}", reason=e)
            return False
        await self._close_on_breach(state)
        return True

    async def _apply_plan_changes(self) -> None:
        """Apply what the operator queued for the plan state; never raises."""
        try:
            await self._plan.lock.acquire()
            try:
                if self._plan.state is None:
                    balance = await self._broker.balance()
                    await self._plan.ensure(balance, self.account.phase, self.account.step)  # applies them
                else:
                    await self._plan.apply_changes()
            finally:
                self._plan.lock.release()
        except (BrokerUnavailable, DatabaseFault, PlanError) as e:
            self._log.info("the operator's plan change waits: {reason}", reason=e)
        except Exception:
            self._log.failure("applying the operator's plan change for account {name} failed", name=self.account.name)

    async def _plan_opened(self) -> None:
        """Count the trading day of a trade that opened; never raises."""
        try:
            await self._plan.lock.acquire()
            try:
                if self._plan.state is None:
                    await self._plan.ensure(await self._broker.balance(), self.account.phase, self.account.step)
                await self._plan.opened()
            finally:
                self._plan.lock.release()
        except Exception:
            self._log.failure("counting the trading day of account {name} failed", name=self.account.name)

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


#: What `AccountSession._place` returns when a signal's trade could not be
#: tried for a passing reason (no order was sent).
TRY_AGAIN = "try again"

#: Lookups in a row, one per monitor interval, that must find no trace of an
#: order before its trade is cancelled as never filled.
NOT_FOUND_LOOKS = 3

#: Seconds a stopping session waits for its work under way to finish.
STOP_WAIT = 20.0


def _reason(error: Exception) -> str:
    """A short readable reason for a client, never a traceback."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


class SessionManager(MultiService):
    """The parent of every account session: creates them on demand, resumes
    the ones with live trades at start-up, drops idle ones."""

    _log = Logger()

    def __init__(
        self,
        store,
        backends,
        strategy,
        plans,
        clock,
        signal_interval: float,
        monitor_interval: float,
        encode=messages.encode,
        metrics=None,
        alerts=None,
    ):
        super().__init__()
        self._metrics = metrics
        self._alerts = alerts
        self._store = store
        self._backends = backends
        self._strategy = strategy
        self._plans = plans
        self._clock = clock
        self._signal_interval = signal_interval
        self._monitor_interval = monitor_interval
        self.encode = encode
        self._sessions: Dict[int, AccountSession] = {}
        self.ready: Optional[defer.Deferred] = None

    def startService(self):
        """Start, and resume every account with a live trade or set
        always-on; `ready` fires when they all run."""
        super().startService()
        self.ready = defer.ensureDeferred(self._resume())

    async def _resume(self):
        accounts = await self._store.accounts_to_resume()
        for account in accounts:
            await self.session_for(account)
        if accounts:
            self._log.info("resumed {n} account session(s)", n=len(accounts))

    def session_for(self, account: Account, connection=None):
        """Deferred[AccountSession]: the account's session, created and started
        if it has none yet, with `connection` (if given) attached to it."""
        session = self._sessions.get(account.id)
        if session is None:
            broker, market = self._backends.broker_for(account)
            session = AccountSession(
                account,
                self._store,
                broker,
                market,
                self._strategy,
                self._plans,
                self._clock,
                self._signal_interval,
                self._monitor_interval,
                self.encode,
                on_idle=lambda: self.release(account.id),
                metrics=self._metrics,
                alerts=self._alerts,
            )
            self._sessions[account.id] = session
            if connection is not None:
                session.attach(connection)
            session.setServiceParent(self)
        elif connection is not None:
            session.attach(connection)
        if session._ready:
            return defer.succeed(session)
        waiter = defer.Deferred()
        session.ready.addBoth(lambda r: (waiter.callback(session), r)[1])
        return waiter

    def get(self, account_id: int) -> Optional[AccountSession]:
        """The account's running session, if any."""
        return self._sessions.get(account_id)

    def release(self, account_id: int) -> None:
        """Drop the account's session if it has nothing left to do."""
        session = self._sessions.get(account_id)
        if session is not None and session.idle and session._ready:
            del self._sessions[account_id]
            session.disownServiceParent()

    @property
    def sessions(self):
        """The running sessions, by account id."""
        return dict(self._sessions)

"""
Trading sessions: one service per account, owning its loops.

`AccountSession` is the coordinator: it holds the state its parts share (the
account, its live trades, the broker, the store, the clock) and runs the two
loops; the work is done by its parts, one module each in `tradebot.trading`:
`delivery` (subscribers and deliveries), `placement` (signal checks and
orders), `watch` (open trades, results, closes), `planning` (the plan's side
of the session). `tradebot.trading.manager.SessionManager` owns the sessions.

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

from typing import Callable, Dict, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tradebot.store.records import Account, TradeRecord
from tradebot.trading import messages
from tradebot.trading.delivery import DeliveryPart, Subscriber, supersede_key  # noqa: F401 (used by callers)
from tradebot.trading.guard import guarded
from tradebot.trading.placement import TRY_AGAIN, PlacementPart  # noqa: F401
from tradebot.trading.planning import PlanningPart
from tradebot.trading.planstate import PlanKeeper
from tradebot.trading.watch import NOT_FOUND_LOOKS, Closing, WatchPart  # noqa: F401


class AccountLogger(Logger):
    """A Logger whose every event carries ``account``: the account's name."""

    def __init__(self, account_name: str, namespace: Optional[str] = None):
        super().__init__(namespace=namespace)
        self.account_name = account_name

    def emit(self, level, format=None, **kwargs):
        kwargs.setdefault("account", self.account_name)
        super().emit(level, format, **kwargs)


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
        call = LoopingCall(lambda: self._track(guarded(self._log, self._what, self._body)))
        call.clock = self._clock
        self._call = call
        call.start(interval, now=now).addErrback(
            lambda f: self._log.failure("{what} loop ended", f, what=self._what)
        )

    def stop(self) -> None:
        if self.running:
            self._call.stop()


class AccountSession(DeliveryPart, PlacementPart, WatchPart, PlanningPart, Service):
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
            self._track(guarded(self._log, "adopting open positions", self._adopt))
        self._update_loops()

    def _store_changed(self, writable: bool, reason: str) -> None:
        """Tell the clients once that trading paused because the database
        takes no writes, once that it resumed."""
        if writable:
            self._publish(messages.trading_resumed())
            self._track(guarded(self._log, "recording delivered completions", self._mark_delivered, ()))
        else:
            self._publish(messages.trading_paused(reason))
        self._update_loops()

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


#: Seconds a stopping session waits for its work under way to finish.
STOP_WAIT = 20.0



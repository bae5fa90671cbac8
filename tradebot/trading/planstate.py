"""
One account's plan state, live: loaded from the store (or started at the
account's phase and step), moved by `tradebot.plans.engine.PlanEngine`, and stored
whenever it changes, with the events that changed it.

Every change runs under `lock`, so a result being stored and a periodic
update never overwrite each other. A state is stored when an event changed it
(a day rollover, a breach, a phase change), when a trade opened, before every
order (`save`), and with each result (in its transaction). A state started
afresh and moved by nothing yet is not written: it is the same when started
again. One the store could not take stays in memory, marked unsaved, and is
stored at the next of those.

A new trading day starts from what the account held at the reset instant: a
timer reads the balance and the equity then (`arm`); when it could not (the
server was down, the broker away), the balance then is worked out as the
balance now less the results of the trades closed since the reset (the stored
ones, and the one being completed), its equity taken as that balance.
"""

import datetime
from decimal import Decimal
from typing import Callable, List, Optional, Tuple

import attrs
from twisted.internet import defer

from tradebot.plans.engine import Entry, PlanEngine, PlanEvent, PlanState
from tradebot.store.faults import DatabaseFault
from tradebot.store.planstore import (
    thd_apply_plan_changes,
    thd_pending_plan_changes,
    thd_plan_events,
    thd_plan_state,
    thd_results_since,
    thd_save_plan_state,
)


class PlanKeeper:
    """The live plan state of one account, kept in step with the store."""

    def __init__(self, account_id: int, plan: Callable[[], object], store, clock, log):
        self._account_id = account_id
        self._plan = plan  # the account's current Plan (it may be changed by the admin)
        self._store = store
        self._clock = clock
        self._log = log
        self.lock = defer.DeferredLock()
        self.state: Optional[PlanState] = None
        self._saved: Optional[PlanState] = None
        self._unsaved: List[PlanEvent] = []
        self._read_at_reset: Optional[tuple] = None  # (reset instant, balance, equity) the timer read
        self._timer = None

    @property
    def engine(self) -> PlanEngine:
        """The engine of the account's plan as it is now."""
        return PlanEngine(self._plan())

    async def ensure(self, balance, phase: int, step: int) -> PlanState:
        """The state, loaded from the store, or (the first time) started from
        `balance` at (`phase`, `step`)."""
        if self.state is None:
            stored = await self._store.run(thd_plan_state, self._account_id)
            if stored is None:
                engine = self.engine
                phase, step = engine.plan.position(phase, step)
                stored = attrs.evolve(
                    engine.start(Decimal(balance), self._clock.seconds()), phase=phase, step=step
                )
                self._saved = None
            else:
                self._saved = stored
            if self.state is None:
                self.state = stored
                await self.apply_changes()
        return self.state

    async def apply_changes(self) -> bool:
        """Apply the operator's pending plan changes (`tradebot account plan`)
        to the state, in order, and store it with them marked applied; True
        if there were any. Call with `lock` held and the state loaded."""
        pending = await self._store.run(thd_pending_plan_changes, self._account_id)
        if not pending or self.state is None:
            return False
        state, events = self.state, list(self._unsaved)
        engine, now = self.engine, self._clock.seconds()
        for _, changes in pending:
            state, happened = engine.set(state, now, **changes)
            events += happened
        self._log_events(events[len(self._unsaved):])
        await self._store.run(thd_apply_plan_changes, self._account_id, [i for i, _ in pending], state, events, now)
        self.state = self._saved = state
        self._unsaved = []
        return True

    async def update(self, balance, equity, open_trades: int) -> PlanState:
        """Apply `PlanEngine.update` now; store the state if it changed."""
        at_reset = await self._at_reset(balance)
        new, events = self.engine.update(self.state, balance, equity, self._clock.seconds(), open_trades, at_reset)
        self._apply(new, events)
        if self._unsaved:
            await self._save()
        return self.state

    def entry(self, balance, equity, loss_per_lot, spec, open_risk=Decimal(0)) -> Entry:
        """`PlanEngine.entry` on the current state, now."""
        return self.engine.entry(self.state, balance, equity, loss_per_lot, spec, self._clock.seconds(), open_risk)

    async def _at_reset(self, balance, closing=None) -> Optional[tuple]:
        """(balance, equity) at the instant the current trading day began, if
        it began after the state's day (else None): what the reset timer read
        then, or the balance now less the results of the trades closed since
        (`closing`, a `ClosedPosition` not stored yet, among them)."""
        plan = self.engine.plan
        day = plan.day_of(self._clock.seconds())
        if self.state is None or day <= self.state.day:
            return None
        reset = plan.day_start(day)
        if self._read_at_reset is not None and self._read_at_reset[0] == reset:
            return self._read_at_reset[1:]
        since = await self._store.run(thd_results_since, self._account_id, reset)
        if closing is not None and closing.closed_at > reset:
            since += closing.profit
        at = Decimal(balance) - since
        return at, at

    def arm(self, look, then) -> None:
        """At each trading day's reset instant, read the account's (balance,
        equity) with ``look()`` (a Deferred or coroutine), keep them as the new
        day's start, and call ``then()`` (which brings the plan up to date).
        Failures are logged; the next reset is armed regardless."""
        self.disarm()
        now = self._clock.seconds()
        plan = self.engine.plan
        tomorrow = datetime.date.fromisoformat(plan.day_of(now)) + datetime.timedelta(days=1)
        next_reset = plan.day_start(tomorrow.isoformat())
        self._timer = self._clock.callLater(next_reset - now, self._reset_reached, next_reset, look, then)

    def disarm(self) -> None:
        """Stop the reset timer."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _reset_reached(self, reset: float, look, then) -> None:
        async def read():
            balance, equity = await look()
            self._read_at_reset = (reset, Decimal(balance), Decimal(equity))
            await then()

        d = defer.ensureDeferred(read())
        d.addErrback(lambda f: self._log.failure("reading the account at the day's reset failed", f))
        d.addBoth(lambda _: self.arm(look, then))

    async def opened(self) -> None:
        """A trade opened now: count the trading day, and store it."""
        if self.state is not None:
            self._apply(self.engine.opened(self.state, self._clock.seconds()), [])
            await self._save()

    async def save(self) -> None:
        """Store the state now if it is not stored; raises `DatabaseFault`."""
        await self._save(quiet=False)

    async def closed(self, result: str, balance, equity, open_trades: int, closing) -> Tuple[PlanState, List[PlanEvent]]:
        """The state and events a trade (`closing`, a `ClosedPosition`)
        closed with `result` leads to, judged on `equity`, with any events
        not stored yet; not applied until `stored`."""
        at_reset = await self._at_reset(balance, closing)
        new, events = self.engine.closed(
            self.state, result, balance, self._clock.seconds(), open_trades, equity=equity, at_reset=at_reset
        )
        self._log_events(events)
        return new, self._unsaved + events

    async def stored(self, state: PlanState, already_recorded: bool) -> None:
        """The result of a closed trade was stored with `state` (or had been
        before, in which case the stored state is read back)."""
        if already_recorded:
            state = await self._store.run(thd_plan_state, self._account_id) or self.state
        self.state = self._saved = state
        self._unsaved = []

    async def history(self, limit: Optional[int] = None) -> List[PlanEvent]:
        """The account's stored plan events, oldest first."""
        return await self._store.run(thd_plan_events, self._account_id, limit)

    def _apply(self, new: PlanState, events: List[PlanEvent]) -> None:
        self._log_events(events)
        self.state = new
        self._unsaved.extend(events)

    def _log_events(self, events) -> None:
        for event in events:
            self._log.info(
                "plan: {kind} (phase {phase} step {step}, balance {balance}, equity {equity}): {detail}",
                kind=event.kind, phase=event.phase, step=event.step, balance=event.balance,
                equity=event.equity, detail=event.detail,
            )

    async def _save(self, quiet: bool = True) -> None:
        if self.state == self._saved and not self._unsaved:
            return
        state, events = self.state, list(self._unsaved)
        try:
            await self._store.run(thd_save_plan_state, self._account_id, state, events, self._clock.seconds())
        except DatabaseFault as e:
            if not quiet:
                raise
            self._log.info("the plan state waits to be stored: {error}", error=e)
            return
        self._saved = state
        del self._unsaved[: len(events)]

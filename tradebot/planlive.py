"""
One account's plan state, live: loaded from the store (or started at the
account's phase and step), moved by `tradebot.risk.PlanEngine`, and stored
whenever it changes, with the events that changed it.

Every change runs under `lock`, so a result being stored and a periodic
update never overwrite each other. A state is stored when an event changed it
(a day rollover, a breach, a phase change), when a trade opened, before every
order (`save`), and with each result (in its transaction). A state started
afresh and moved by nothing yet is not written: it is the same when started
again. One the store could not take stays in memory, marked unsaved, and is
stored at the next of those.
"""

from decimal import Decimal
from typing import Callable, List, Optional, Tuple

import attrs
from twisted.internet import defer

from tradebot.dbfaults import DatabaseFault
from tradebot.planstore import thd_plan_events, thd_plan_state, thd_save_plan_state
from tradebot.risk import Entry, PlanEngine, PlanEvent, PlanState


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
        return self.state

    async def update(self, balance, equity, open_trades: int) -> PlanState:
        """Apply `PlanEngine.update` now; store the state if it changed."""
        new, events = self.engine.update(self.state, balance, equity, self._clock.seconds(), open_trades)
        self._apply(new, events)
        if self._unsaved:
            await self._save()
        return self.state

    def entry(self, balance, equity, loss_per_lot, spec) -> Entry:
        """`PlanEngine.entry` on the current state, now."""
        return self.engine.entry(self.state, balance, equity, loss_per_lot, spec, self._clock.seconds())

    async def opened(self) -> None:
        """A trade opened now: count the trading day, and store it."""
        if self.state is not None:
            self._apply(self.engine.opened(self.state, self._clock.seconds()), [])
            await self._save()

    async def save(self) -> None:
        """Store the state now if it is not stored; raises `DatabaseFault`."""
        await self._save(quiet=False)

    def closed(self, result: str, balance, open_trades: int) -> Tuple[PlanState, List[PlanEvent]]:
        """The state and events a trade closed now with `result` leads to,
        with any events not stored yet; not applied until `stored`."""
        new, events = self.engine.closed(self.state, result, balance, self._clock.seconds(), open_trades)
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

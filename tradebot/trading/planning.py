"""
The session's side of its plan: the account's balance and equity read for it, the open
trades' remaining risk, the reset timer, the periodic update, the operator's changes and the
trading day counted when a trade opens (the state itself: `tradebot.trading.planstate`).

`PlanningPart` is a part of `tradebot.loops.AccountSession`, which holds the state
its methods share.
"""

from decimal import Decimal

from tradebot.broker import BrokerUnavailable, to_cents
from tradebot.plans.plan import TRAILING, PlanError
from tradebot.store import records
from tradebot.store.faults import DatabaseFault


class PlanningPart:
    """Methods of `tradebot.loops.AccountSession`: the session's side of its
    plan. The balance and equity are read for it, the open trades' remaining
    risk to their stops counted, the day rolled over at its reset instant
    (a timer), the plan brought up to date at each check, and the operator's
    queued changes applied; a breach under ``close_on_breach`` asks the watch
    to close what is open.

    Uses the session's `account`, `_broker`, `_plan`, `_plans`, `_trades`,
    `_log`, and the watch's `_close_on_breach`."""

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

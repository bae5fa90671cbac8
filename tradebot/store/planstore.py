"""
Persistence of plan states and plan events (tables ``plan_states`` and
``plan_events``): ``thd_*`` functions run by a store (`Store.run`) inside one
transaction, like those of `tradebot.store.db`.

An account's ``phase`` and ``step`` columns are kept equal to its plan state's,
so older readers of the account see the same place.
"""

import json
from decimal import Decimal
from typing import Iterable, List, Optional, Tuple

import sqlalchemy as sa

from tradebot.plans.engine import PlanEvent, PlanState
from tradebot.store import records
from tradebot.store.schema import accounts, plan_changes, plan_events, plan_states, trades


def thd_plan_state(conn, account_id: int) -> Optional[PlanState]:
    """The account's stored plan state, or None if it has none yet."""
    row = conn.execute(sa.select(plan_states).where(plan_states.c.account_id == account_id)).first()
    if row is None:
        return None
    return PlanState(
        phase=row.phase,
        step=row.step,
        phase_start_balance=row.phase_start_balance,
        day=row.day,
        day_start_balance=row.day_start_balance,
        peak_eod_balance=row.peak_eod_balance,
        trading_days=row.trading_days,
        last_trading_day=row.last_trading_day,
        status=row.status,
        initial_capital=row.initial_capital,
        day_start_equity=row.day_start_equity,
    )


def thd_save_plan_state(conn, account_id: int, state: PlanState, events: Iterable[PlanEvent], now: float) -> None:
    """Store the account's plan state (and its phase and step on the account)
    and append `events` to its history, in the caller's transaction."""
    values = dict(
        phase=state.phase,
        step=state.step,
        phase_start_balance=state.phase_start_balance,
        day=state.day,
        day_start_balance=state.day_start_balance,
        peak_eod_balance=state.peak_eod_balance,
        trading_days=state.trading_days,
        last_trading_day=state.last_trading_day,
        status=state.status,
        initial_capital=state.initial_capital,
        day_start_equity=state.day_start_equity,
        updated_at=now,
    )
    updated = conn.execute(plan_states.update().where(plan_states.c.account_id == account_id).values(**values))
    if updated.rowcount == 0:
        conn.execute(plan_states.insert().values(account_id=account_id, **values))
    conn.execute(accounts.update().where(accounts.c.id == account_id).values(phase=state.phase, step=state.step))
    for event in events:
        conn.execute(
            plan_events.insert().values(
                account_id=account_id,
                kind=event.kind,
                at=event.at,
                phase=event.phase,
                step=event.step,
                balance=event.balance,
                equity=event.equity,
                detail=event.detail[:500],
            )
        )


def thd_plan_events(conn, account_id: int, limit: Optional[int] = None) -> List[PlanEvent]:
    """The account's plan events, oldest first (the latest `limit` if given)."""
    query = sa.select(plan_events).where(plan_events.c.account_id == account_id).order_by(plan_events.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    rows = list(conn.execute(query))
    rows.reverse()
    return [PlanEvent(r.kind, r.at, r.phase, r.step, r.balance, r.equity, r.detail) for r in rows]


def thd_results_since(conn, account_id: int, since: float) -> Decimal:
    """The sum of the results of the account's trades that closed after
    epoch second `since` (0 if none)."""
    rows = conn.execute(
        sa.select(trades.c.profit).where(
            trades.c.account_id == account_id, trades.c.status == records.CLOSED, trades.c.closed_at > since
        )
    ).scalars()
    return sum((Decimal(p) for p in rows if p is not None), Decimal(0))


#: What a plan change may set: the keywords of `tradebot.plans.engine.PlanEngine.set`.
PLAN_CHANGE_KEYS = ("phase", "initial_capital", "reference_balance", "restart")


def thd_queue_plan_change(conn, account_id: int, changes: dict, now: float) -> None:
    """Queue `changes` (`PLAN_CHANGE_KEYS`; money as text) for the account's
    session, and mark the account as changed."""
    unknown = set(changes) - set(PLAN_CHANGE_KEYS)
    if unknown:
        raise ValueError(f"unknown plan change(s): {', '.join(sorted(unknown))}")
    conn.execute(plan_changes.insert().values(account_id=account_id, changes=json.dumps(changes), created_at=now))
    conn.execute(accounts.update().where(accounts.c.id == account_id).values(plan_changed_at=now))


def thd_pending_plan_changes(conn, account_id: int) -> List[Tuple[int, dict]]:
    """(id, changes) of the account's plan changes not applied yet, oldest first."""
    rows = conn.execute(
        sa.select(plan_changes.c.id, plan_changes.c.changes)
        .where(plan_changes.c.account_id == account_id, plan_changes.c.applied_at.is_(None))
        .order_by(plan_changes.c.id)
    )
    return [(row.id, json.loads(row.changes)) for row in rows]


def thd_apply_plan_changes(conn, account_id: int, ids, state: PlanState, events, now: float) -> None:
    """Store the state the changes `ids` led to, with their events, and mark
    them applied: one transaction."""
    thd_save_plan_state(conn, account_id, state, events, now)
    conn.execute(plan_changes.update().where(plan_changes.c.id.in_(list(ids))).values(applied_at=now))

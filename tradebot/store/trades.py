"""
The trades' and events' ``thd_*`` operations: the intent recorded before an
order, the fill, an adopted position, a refusal, the result with the plan's
state and the completion event in one transaction; reads of live trades and
of an account's trades by page; undelivered events and their delivery.
"""

import json
import re
from typing import Iterable, List, Optional, Tuple

import sqlalchemy as sa

from tradebot.store import records
from tradebot.store.accounts import thd_account_by_id, thd_account_by_name
from tradebot.store.planstore import thd_save_plan_state
from tradebot.store.records import Completion, PendingEvent, TradeRecord
from tradebot.store.rows import UnknownAccount, _trade, _trade_by_id
from tradebot.store.schema import accounts, events, trades


def thd_record_intent(
    conn, account_id, symbol, side, lot_size, stop_loss, take_profit, phase, step, now
) -> TradeRecord:
    """Record that an order is about to be sent. The trade is pending, with
    the comment ``tb-<id>`` the order must carry."""
    result = conn.execute(
        trades.insert().values(
            account_id=account_id,
            symbol=symbol,
            side=side,
            status=records.PENDING,
            lot_size=lot_size,
            stop_loss=stop_loss,
            take_profit=take_profit,
            phase=phase,
            step=step,
            created_at=now,
        )
    )
    trade_id = result.inserted_primary_key[0]
    conn.execute(trades.update().where(trades.c.id == trade_id).values(comment=f"tb-{trade_id}"))
    return _trade_by_id(conn, trade_id)


def thd_mark_open(
    conn, trade_id, ticket, open_price, lot_size, stop_loss, take_profit, opened_at
) -> TradeRecord:
    """Record the fill of a pending trade, with the broker's figures."""
    conn.execute(
        trades.update()
        .where(trades.c.id == trade_id, trades.c.status.in_(records.LIVE_STATUSES))
        .values(
            status=records.OPEN,
            ticket=ticket,
            open_price=open_price,
            lot_size=lot_size,
            stop_loss=stop_loss,
            take_profit=take_profit,
            opened_at=opened_at,
        )
    )
    return _trade_by_id(conn, trade_id)


def thd_adopt_position(
    conn, account_id, comment, symbol, side, ticket, open_price, lot_size, stop_loss, take_profit,
    opened_at, phase, step, now,
) -> Optional[TradeRecord]:
    """Record an open position of the account's that no live trade holds
    (an order whose answer was lost and that was given up on, or a store
    restored from an older copy): the trade its comment ``tb-<id>`` names, if
    that trade is this account's and was recorded as never placed, opens
    again; otherwise a new open trade records it. None if a trade already
    holds the position."""
    held = conn.execute(
        sa.select(trades.c.id).where(
            trades.c.account_id == account_id,
            trades.c.ticket == ticket,
            trades.c.status.in_(records.LIVE_STATUSES + (records.CLOSED,)),
        )
    ).first()
    if held:
        return None
    filled = dict(
        status=records.OPEN, ticket=ticket, open_price=open_price, lot_size=lot_size,
        stop_loss=stop_loss, take_profit=take_profit, opened_at=opened_at,
    )
    named = re.fullmatch(r"tb-(\d+)", comment or "")
    if named:
        result = conn.execute(
            trades.update()
            .where(
                trades.c.id == int(named.group(1)),
                trades.c.account_id == account_id,
                trades.c.status.in_((records.PENDING, records.CANCELLED, records.REFUSED)),
            )
            .values(error=None, **filled)
        )
        if result.rowcount:
            return _trade_by_id(conn, int(named.group(1)))
    inserted = conn.execute(
        trades.insert().values(
            account_id=account_id, symbol=symbol, side=side, comment=(comment or "")[:32],
            phase=phase, step=step, created_at=now, **filled,
        )
    )
    return _trade_by_id(conn, inserted.inserted_primary_key[0])


def thd_mark_not_placed(conn, trade_id, status, error) -> TradeRecord:
    """Record that a pending trade was never placed (refused or cancelled)."""
    assert status in (records.REFUSED, records.CANCELLED)
    conn.execute(
        trades.update()
        .where(trades.c.id == trade_id, trades.c.status == records.PENDING)
        .values(status=status, error=str(error)[:500])
    )
    return _trade_by_id(conn, trade_id)


def thd_complete_trade(
    conn,
    trade_id,
    close_price,
    closed_at,
    profit,
    result,
    close_reason,
    phase_after,
    step_after,
    balance_after,
    payload,
    now,
    plan_state=None,
    plan_events=(),
) -> Completion:
    """Record a trade's result, move its account to the new phase, step and
    balance, and queue the completion message, all in one transaction; with
    `plan_state` (a `tradebot.plans.engine.PlanState`), store it and `plan_events`
    in the same transaction. A trade recorded as closed already is left as it
    is (`already_recorded`), and so is the plan state."""
    trade = _trade_by_id(conn, trade_id)
    if trade.status == records.CLOSED:
        row = conn.execute(
            sa.select(events).where(events.c.trade_id == trade_id).order_by(events.c.id)
        ).first()
        return Completion(
            trade=trade,
            account=thd_account_by_id(conn, trade.account_id),
            event_id=row.id,
            payload=json.loads(row.payload),
            already_recorded=True,
        )
    conn.execute(
        trades.update()
        .where(trades.c.id == trade_id)
        .values(
            status=records.CLOSED,
            close_price=close_price,
            closed_at=closed_at,
            profit=profit,
            result=result,
            close_reason=close_reason,
            phase_after=phase_after,
            step_after=step_after,
            balance_after=balance_after,
        )
    )
    conn.execute(
        accounts.update()
        .where(accounts.c.id == trade.account_id)
        .values(phase=phase_after, step=step_after, balance=balance_after)
    )
    if plan_state is not None:
        thd_save_plan_state(conn, trade.account_id, plan_state, plan_events, now)
    event_id = conn.execute(
        events.insert().values(
            account_id=trade.account_id,
            trade_id=trade_id,
            payload=json.dumps(payload),
            created_at=now,
        )
    ).inserted_primary_key[0]
    return Completion(
        trade=_trade_by_id(conn, trade_id),
        account=thd_account_by_id(conn, trade.account_id),
        event_id=event_id,
        payload=payload,
    )


def thd_live_trades(conn, account_id: int) -> List[TradeRecord]:
    """The account's pending and open trades, oldest first."""
    rows = conn.execute(
        sa.select(trades)
        .where(trades.c.account_id == account_id, trades.c.status.in_(records.LIVE_STATUSES))
        .order_by(trades.c.id)
    )
    return [_trade(r) for r in rows]


def thd_trades(
    conn, account_name: Optional[str] = None, live_only: bool = False
) -> List[Tuple[str, TradeRecord]]:
    """(account name, trade) pairs, oldest first, optionally for one account
    or only live trades; raises `UnknownAccount`."""
    query = sa.select(accounts.c.name, trades).join(accounts, accounts.c.id == trades.c.account_id)
    if account_name is not None:
        if thd_account_by_name(conn, account_name) is None:
            raise UnknownAccount(f"no account named {account_name!r}")
        query = query.where(accounts.c.name == account_name)
    if live_only:
        query = query.where(trades.c.status.in_(records.LIVE_STATUSES))
    return [(r.name, _trade(r)) for r in conn.execute(query.order_by(trades.c.id))]


def thd_trades_page(conn, account_id: int, before: Optional[int], limit: int) -> List[TradeRecord]:
    """The account's last `limit` trades with ids below `before` (all, if
    None), oldest first: read by id from the end, never the whole history."""
    query = sa.select(trades).where(trades.c.account_id == account_id)
    if before is not None:
        query = query.where(trades.c.id < before)
    rows = conn.execute(query.order_by(trades.c.id.desc()).limit(limit)).all()
    return [_trade(r) for r in reversed(rows)]


def thd_pending_events(conn, account_id: int) -> List[PendingEvent]:
    """The account's undelivered messages, oldest first."""
    rows = conn.execute(
        sa.select(events)
        .where(events.c.account_id == account_id, events.c.delivered_at.is_(None))
        .order_by(events.c.id)
    )
    return [PendingEvent(r.id, r.account_id, r.trade_id, json.loads(r.payload)) for r in rows]


def thd_mark_delivered(conn, event_ids: Iterable[int], now: float) -> None:
    """Record that these events reached a client."""
    ids = list(event_ids)
    if ids:
        conn.execute(
            events.update()
            .where(events.c.id.in_(ids), events.c.delivered_at.is_(None))
            .values(delivered_at=now)
        )

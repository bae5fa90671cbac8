"""
Rows into records: what a query returns becomes a plain attrs value, never a
live database row; and the store's errors.
"""

from typing import Optional

import sqlalchemy as sa

from tradebot.store.engine import StoreError
from tradebot.store.records import Account, TradeRecord
from tradebot.store.schema import accounts, trades


class DuplicateAccount(StoreError):
    """An account with that name exists already."""


class UnknownAccount(StoreError):
    """No account has that name."""


def _account(row) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        symbols=tuple(s for s in row.symbols.split(",") if s),
        plan=row.plan,
        phase=row.phase,
        step=row.step,
        balance=row.balance,
        max_open_trades=row.max_open_trades,
        always_on=bool(row.always_on),
        revoked=row.token_hash is None,
        created_at=row.created_at,
        broker=row.broker,
        broker_password_encrypted=row.broker_password_encrypted,
        token_hash=row.token_hash,
        plan_changed_at=row.plan_changed_at,
    )


def _trade(row) -> TradeRecord:
    return TradeRecord(**{c.name: getattr(row, c.name) for c in trades.columns})


def _one_account(conn, where) -> Optional[Account]:
    row = conn.execute(sa.select(accounts).where(where)).first()
    return _account(row) if row else None


def _trade_by_id(conn, trade_id: int) -> TradeRecord:
    return _trade(conn.execute(sa.select(trades).where(trades.c.id == trade_id)).one())

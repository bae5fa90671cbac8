"""The first schema: accounts, trades, undelivered events, broker state.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from tradebot.store.schema import ExactDecimal

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("symbols", sa.String(1000), nullable=False),
        sa.Column("plan", sa.String(200), nullable=False),
        sa.Column("phase", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("balance", ExactDecimal, nullable=False),
        sa.Column("max_open_trades", sa.Integer, nullable=False),
        sa.Column("always_on", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "trades",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("comment", sa.String(32)),
        sa.Column("ticket", sa.BigInteger),
        sa.Column("lot_size", ExactDecimal, nullable=False),
        sa.Column("stop_loss", ExactDecimal, nullable=False),
        sa.Column("take_profit", ExactDecimal, nullable=False),
        sa.Column("open_price", ExactDecimal),
        sa.Column("close_price", ExactDecimal),
        sa.Column("profit", ExactDecimal),
        sa.Column("result", sa.String(6)),
        sa.Column("close_reason", sa.String(10)),
        sa.Column("phase", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("phase_after", sa.Integer),
        sa.Column("step_after", sa.Integer),
        sa.Column("balance_after", ExactDecimal),
        sa.Column("error", sa.String(500)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("opened_at", sa.Float),
        sa.Column("closed_at", sa.Float),
    )
    op.create_index("ix_trades_account_status", "trades", ["account_id", "status"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("trade_id", sa.Integer, sa.ForeignKey("trades.id")),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
    )
    op.create_index("ix_events_account_delivered", "events", ["account_id", "delivered_at"])
    op.create_table(
        "broker_state",
        sa.Column("backend", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )

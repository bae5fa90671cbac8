"""Each account's plan state and the history of its plan events.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from tradebot.store.schema import ExactDecimal

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plan_states",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("phase", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("phase_start_balance", ExactDecimal, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("day_start_balance", ExactDecimal, nullable=False),
        sa.Column("peak_eod_balance", ExactDecimal, nullable=False),
        sa.Column("trading_days", sa.Integer, nullable=False),
        sa.Column("last_trading_day", sa.String(10)),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "plan_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("phase", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("balance", ExactDecimal, nullable=False),
        sa.Column("equity", ExactDecimal, nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
    )
    op.create_index("ix_plan_events_account", "plan_events", ["account_id", "id"])

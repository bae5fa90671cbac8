"""Accounts may subscribe to a webhook; its alerts are queued until taken.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from tradebot.store.schema import ExactDecimal

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_webhooks_secret_hash", "webhooks", ["secret_hash"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("stop_price", ExactDecimal),
        sa.Column("take_price", ExactDecimal),
        sa.Column("stop_distance", ExactDecimal),
        sa.Column("take_distance", ExactDecimal),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("taken_at", sa.Float),
    )
    op.create_index("ix_alerts_status_account", "alerts", ["status", "account_id"])

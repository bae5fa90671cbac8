"""Plan states keep the firm's initial capital and the equity the day started with.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from tradebot.store.schema import ExactDecimal

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("plan_states", sa.Column("initial_capital", ExactDecimal))
    op.add_column("plan_states", sa.Column("day_start_equity", ExactDecimal))

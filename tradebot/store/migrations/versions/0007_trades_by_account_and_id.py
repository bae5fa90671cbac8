"""An account's trades by id: its last ones are read from the end, a page at a time.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trades_account_id", "trades", ["account_id", "id"])

"""
The database schema (SQLAlchemy Core), portable between SQLite and PostgreSQL.
It is what the queries use; databases are made and changed by the migrations in
`tradebot.store.migrations`, which a test keeps in step with it.

Money and prices are stored exactly: `ExactDecimal` keeps a Decimal as NUMERIC on
PostgreSQL and as its decimal text on SQLite (which has no exact numeric type).
"""

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()


class ExactDecimal(TypeDecorator):
    """A Decimal column that never passes through a float."""

    impl = sa.Numeric(28, 10)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(40))
        return dialect.type_descriptor(sa.Numeric(28, 10, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = Decimal(value)
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return _plain(Decimal(value))


def _plain(value: Decimal) -> Decimal:
    """`value` without trailing zeros and without an exponent (1E+4 -> 10000)."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(64), unique=True),  # NULL once revoked
    sa.Column("symbols", sa.String(1000), nullable=False),  # comma-separated
    sa.Column("plan", sa.String(200), nullable=False),
    sa.Column("phase", sa.Integer, nullable=False, default=1),
    sa.Column("step", sa.Integer, nullable=False, default=1),
    sa.Column("balance", ExactDecimal, nullable=False),
    sa.Column("max_open_trades", sa.Integer, nullable=False, default=1),
    sa.Column("always_on", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # the account's own broker URL (an MT5 terminal); NULL: the server's --broker
    sa.Column("broker", sa.String(500)),
    # when the operator last queued a change to the account's plan state
    # (`plan_changes`): its session applies what is pending when it sees it move
    sa.Column("plan_changed_at", sa.Float),
    # the password of that terminal's login, encrypted (tradebot.store.credentials); NULL: none stored
    sa.Column("broker_password_encrypted", sa.Text),
)

trades = sa.Table(
    "trades",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    # pending: intent recorded, order not confirmed; open; closed; refused;
    # cancelled: a pending order the broker never filled.
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
    sa.Index("ix_trades_account_status", "account_id", "status"),
    # an account's last trades, read from the end (GET /api/trades)
    sa.Index("ix_trades_account_id", "account_id", "id"),
)

# Messages a client must still receive: a completion that happened while no
# connection of the account was streaming.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("trade_id", sa.Integer, sa.ForeignKey("trades.id")),
    sa.Column("payload", sa.Text, nullable=False),  # the message, as JSON
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
    sa.Index("ix_events_account_delivered", "account_id", "delivered_at"),
)

# Documents a broker backend keeps for itself (the paper broker's accounts,
# positions and market), keyed by backend and key, as JSON text.
broker_state = sa.Table(
    "broker_state",
    metadata,
    sa.Column("backend", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# The webhook an account is subscribed to (`tradebot.trading.alerts`): only the hash of
# its secret, like a token's.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Signals queued by webhook calls, each for one account and symbol, taken by
# that account's next signal check while valid (`tradebot.trading.alerts`).
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    # the stops it gives (each a price or a distance, or neither: the strategy's)
    sa.Column("stop_price", ExactDecimal),
    sa.Column("take_price", ExactDecimal),
    sa.Column("stop_distance", ExactDecimal),
    sa.Column("take_distance", ExactDecimal),
    sa.Column("status", sa.String(10), nullable=False),  # queued, taken, replaced, expired
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("taken_at", sa.Float),
    sa.Index("ix_alerts_status_account", "status", "account_id"),
)

# The plan state of each account (`tradebot.plans.engine.PlanState`): where it is in its
# plan and every number its limits are measured from, so that a restart in the
# middle of a day keeps the same limits (`tradebot.store.planstore`).
plan_states = sa.Table(
    "plan_states",
    metadata,
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("phase", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("phase_start_balance", ExactDecimal, nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # ISO date
    sa.Column("day_start_balance", ExactDecimal, nullable=False),
    sa.Column("peak_eod_balance", ExactDecimal, nullable=False),
    sa.Column("trading_days", sa.Integer, nullable=False),
    sa.Column("last_trading_day", sa.String(10)),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # the firm's initial capital, and the equity the day started with (NULL in
    # states stored before 0008: the phase's starting balance, the day's balance)
    sa.Column("initial_capital", ExactDecimal),
    sa.Column("day_start_equity", ExactDecimal),
)

# What moved each account's plan (`tradebot.plans.engine.PlanEvent`): day rollovers,
# breaches, phase and step changes, with the balance and equity that caused them.
plan_events = sa.Table(
    "plan_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("phase", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("balance", ExactDecimal, nullable=False),
    sa.Column("equity", ExactDecimal, nullable=False),
    sa.Column("detail", sa.String(500), nullable=False),
    sa.Index("ix_plan_events_account", "account_id", "id"),
)

# Values the server keeps for itself, by name (`tradebot.store.serverkeys`): the hash
# of the operator's admin token, and the key broker names are derived with.
server_settings = sa.Table(
    "server_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(500), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Changes to an account's plan state the operator asked for (`tradebot account
# plan`): the phase, the initial capital, the reference balance, a restart. The
# account's session applies them (the only writer of its plan state), in order,
# and marks them applied in the same transaction.
plan_changes = sa.Table(
    "plan_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("changes", sa.Text, nullable=False),  # JSON: the keywords of PlanEngine.set
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("applied_at", sa.Float),
    sa.Index("ix_plan_changes_account", "account_id", "applied_at"),
)

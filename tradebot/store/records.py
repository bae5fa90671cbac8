"""
The stored records as plain attrs values: what the store returns, never a live
database row.
"""

from decimal import Decimal
from typing import Optional, Tuple

import attrs

#: Trade statuses. A trade is "live" (watched by its session) while pending or open.
PENDING = "pending"
OPEN = "open"
CLOSED = "closed"
REFUSED = "refused"
CANCELLED = "cancelled"
LIVE_STATUSES = (PENDING, OPEN)

PROFIT = "profit"
LOSS = "loss"


@attrs.frozen
class Account:
    """A premium account: who trades which symbols under which plan."""

    id: int
    name: str
    symbols: Tuple[str, ...]
    plan: str
    phase: int
    step: int
    balance: Decimal
    max_open_trades: int
    always_on: bool
    revoked: bool
    created_at: float
    #: The account's own broker URL, or None for the server's.
    broker: Optional[str] = None
    #: That broker's password, encrypted (`tradebot.store.credentials`); None if
    #: none is stored. Never the plain password.
    broker_password_encrypted: Optional[str] = attrs.field(default=None, repr=False)
    #: The SHA-256 of the account's token (None once revoked), to confirm a
    #: lookup by hash with `tradebot.store.tokens.token_matches`.
    token_hash: Optional[str] = attrs.field(default=None, repr=False)
    #: When the operator last queued a change to the account's plan state.
    plan_changed_at: Optional[float] = None

    @property
    def has_broker_password(self) -> bool:
        """True if a broker password is stored for the account."""
        return self.broker_password_encrypted is not None


@attrs.frozen
class TradeRecord:
    """One trade, from the recorded intent to its result."""

    id: int
    account_id: int
    symbol: str
    side: str
    status: str
    comment: Optional[str]
    ticket: Optional[int]
    lot_size: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    open_price: Optional[Decimal]
    close_price: Optional[Decimal]
    profit: Optional[Decimal]
    result: Optional[str]
    close_reason: Optional[str]
    phase: int
    step: int
    phase_after: Optional[int]
    step_after: Optional[int]
    balance_after: Optional[Decimal]
    error: Optional[str]
    created_at: float
    opened_at: Optional[float]
    closed_at: Optional[float]

    @property
    def live(self) -> bool:
        """True while the trade's session must watch it."""
        return self.status in LIVE_STATUSES


@attrs.frozen
class Completion:
    """What closing a trade stored: the closed trade, the account after the
    result was applied, and the id of the event that carries message 3."""

    trade: TradeRecord
    account: Account
    event_id: int
    payload: dict
    already_recorded: bool = False


@attrs.frozen
class PendingEvent:
    """A message an account's clients must still receive."""

    id: int
    account_id: int
    trade_id: Optional[int]
    payload: dict

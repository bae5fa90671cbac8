"""
Every message the server sends to a client, built in one place.

This module is the client contract (docs/protocol.md, from the shared
PROTOCOL.md): the texts and keys below are matched by existing apps, typos
included (``curent_price``). Keys may be added; none may be renamed or removed.
Prices arrive as Decimals already rounded to the symbol's digits, money as
Decimals rounded to cents; both leave as JSON numbers.
"""

import json
from decimal import Decimal
from typing import Iterable

WELCOME = "You are now receiving messages"
ACTIVE_TRADE = "active trade in progress"
TRADE_COMPLETED = "Trade completed"
CHECKING = "checking for signal..."
TRADE_PLACED = "A signal was received and trade has been placed"
TRADE_NOT_PLACED = "trade could not be placed"
TRADE_SKIPPED = "trade skipped"
INVALID_MESSAGE = "invalid message"
BROKER_UNAVAILABLE = "broker unavailable"
BROKER_AVAILABLE = "broker available"
TRADING_PAUSED = "trading paused"
TRADING_RESUMED = "trading resumed"


def _number(value: Decimal) -> float:
    """A rounded Decimal as the JSON number with the same digits (2330.10 ->
    2330.1). Always a float, as MT5 gives them: typed clients decode a double."""
    return float(value)


def welcome(symbols: Iterable[str]) -> dict:
    """Message 1: sent once per connection, as soon as it opens."""
    return {"status": True, "message": WELCOME, "symbols": list(symbols)}


def active_trade(
    trade_id: int,
    symbol: str,
    side: str,
    stop_loss: Decimal,
    take_profit: Decimal,
    open_price: Decimal,
    lot_size: Decimal,
    current_price: Decimal,
    profit: Decimal,
) -> dict:
    """Message 2: an open trade and its current price, every monitor interval.
    ``profit`` (an added key) is its floating profit in account money."""
    return {
        "status": True,
        "message": ACTIVE_TRADE,
        "data": {
            "symbol": symbol,
            "trade_type": side,
            "stop_loss": _number(stop_loss),
            "take_profit": _number(take_profit),
            "open_price": _number(open_price),
            "lot_size": _number(lot_size),
            "curent_price": _number(current_price),
            "trade_id": trade_id,
            "profit": _number(profit),
        },
    }


def trade_completed(
    trade_id: int,
    symbol: str,
    result: str,
    phase: int,
    step: int,
    lot_size: Decimal,
    stop_loss: Decimal,
    take_profit: Decimal,
    new_balance: Decimal,
    profit: Decimal,
    close_price: Decimal,
) -> dict:
    """Message 3: a trade closed. `phase`/`step` are the account's position
    after the result; the lot and stops are those of the trade that closed."""
    return {
        "status": True,
        "message": TRADE_COMPLETED,
        "data": {
            "symbol": symbol,
            "result": result,
            "current_phase": phase,
            "current_step": step,
            "lot_size": _number(lot_size),
            "stop_loss": _number(stop_loss),
            "take_profit": _number(take_profit),
            "new_account_balance": _number(new_balance),
            "trade_id": trade_id,
            "profit": _number(profit),
            "close_price": _number(close_price),
        },
    }


def checking(symbol: str) -> dict:
    """Message 4: a symbol is being checked for a signal."""
    return {"status": False, "message": CHECKING, "data": {"symbol": symbol}}


def signal(side: str, symbol: str) -> dict:
    """Message 5: a check found a BUY or SELL signal."""
    return {"status": True, "message": side, "data": {"symbol": symbol}}


def trade_placed(symbol: str) -> dict:
    """Message 6: the trade for a signal has been placed."""
    return {"status": True, "message": TRADE_PLACED, "data": {"symbol": symbol}}


def trade_not_placed(symbol: str, error: str) -> dict:
    """The broker refused the order for a signal; nothing was opened."""
    return {"status": False, "message": TRADE_NOT_PLACED, "data": {"symbol": symbol, "error": error}}


def trade_skipped(symbol: str, reason: str) -> dict:
    """The account's plan kept a signal from becoming a trade (a loss limit
    reached, or no lot that fits the headroom left); no order was sent."""
    return {"status": False, "message": TRADE_SKIPPED, "data": {"symbol": symbol, "reason": reason}}


def broker_unavailable(reason: str) -> dict:
    """The broker stopped answering or cannot take orders: no new trade is
    placed until `broker_available`; open trades are reported again then."""
    return {"status": False, "message": BROKER_UNAVAILABLE, "data": {"reason": reason}}


def broker_available() -> dict:
    """The broker is back after `broker_unavailable`."""
    return {"status": True, "message": BROKER_AVAILABLE, "data": {}}


def trading_paused(reason: str) -> dict:
    """The database takes no writes (`reason`: ``database: disk full``,
    ``database: locked``...): no new trade is placed until `trading_resumed`;
    open trades are still reported, and their results sent once stored."""
    return {"status": False, "message": TRADING_PAUSED, "data": {"reason": reason}}


def trading_resumed() -> dict:
    """The database takes writes again after `trading_paused`."""
    return {"status": True, "message": TRADING_RESUMED, "data": {}}


def invalid_message(error: str) -> dict:
    """The answer to a client frame that is not a known command."""
    return {"status": False, "message": INVALID_MESSAGE, "error": error}


def encode(message: dict) -> bytes:
    """The UTF-8 JSON text of a message, as it goes on the wire."""
    return json.dumps(message, separators=(", ", ": "), ensure_ascii=False).encode("utf-8")

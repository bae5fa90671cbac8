"""
MetaTrader 5 return codes and enumerations, and what each means to the server.

The values are those of the MetaTrader5 package (see docs/mt5.md). Two kinds of
code exist: `last_error()` codes, for a call that returned None, and
`TRADE_RETCODE_*`, the trade server's answer in an order's result.
"""

# -- enumerations used in requests and results --------------------------------

TIMEFRAME_M1 = 1
ORDER_TYPE_BUY = 0
ORDER_TYPE_SELL = 1
TRADE_ACTION_DEAL = 1
ORDER_TIME_GTC = 0
ORDER_FILLING_FOK = 0
ORDER_FILLING_IOC = 1
ORDER_FILLING_RETURN = 2
# Bits of symbol_info().filling_mode; the module does not export them.
SYMBOL_FILLING_FOK = 1
SYMBOL_FILLING_IOC = 2
SYMBOL_TRADE_EXECUTION_EXCHANGE = 3
SYMBOL_TRADE_MODE_DISABLED = 0
SYMBOL_TRADE_MODE_LONGONLY = 1
SYMBOL_TRADE_MODE_SHORTONLY = 2
SYMBOL_TRADE_MODE_CLOSEONLY = 3
ACCOUNT_MARGIN_MODE_RETAIL_NETTING = 0
ACCOUNT_MARGIN_MODE_RETAIL_HEDGING = 2
DEAL_TYPE_BUY = 0
DEAL_TYPE_SELL = 1
DEAL_ENTRY_IN = 0
DEAL_ENTRY_OUT = 1
DEAL_ENTRY_INOUT = 2
DEAL_ENTRY_OUT_BY = 3

#: How a position closed, by the exit deal's reason (DEAL_REASON_*).
CLOSE_REASON_BY_DEAL_REASON = {
    0: "manual",  # CLIENT: the desktop terminal
    1: "manual",  # MOBILE
    2: "manual",  # WEB
    3: "expert",  # EXPERT: a program, this server included
    4: "sl",
    5: "tp",
    6: "stop_out",
}

# -- last_error() codes -------------------------------------------------------

RES_S_OK = 1
RES_E_INVALID_PARAMS = -2
RES_E_NOT_FOUND = -4
RES_E_AUTH_FAILED = -6
RES_E_UNSUPPORTED = -7
RES_E_AUTO_TRADING_DISABLED = -8
#: last_error codes of an order_send that never left the terminal, as readable reasons.
NOT_SENT_REASONS = {
    RES_E_INVALID_PARAMS: "invalid request",
    RES_E_UNSUPPORTED: "not supported by the terminal",
    RES_E_AUTO_TRADING_DISABLED: "trading through the Python API is disabled in the terminal "
    "(Tools > Options > Expert Advisors)",
}
#: IPC failures: the terminal is gone, restarting, or did not answer in time.
IPC_ERRORS = frozenset({-10000, -10001, -10002, -10003, -10004, -10005})

# -- TRADE_RETCODE_* ----------------------------------------------------------

PLACED = 10008
DONE = 10009
DONE_PARTIAL = 10010
REQUOTE = 10004
PRICE_CHANGED = 10020
PRICE_OFF = 10021
TIMEOUT = 10012
TOO_MANY_REQUESTS = 10024
CONNECTION = 10031
POSITION_CLOSED = 10036
INVALID_FILL = 10030
INVALID_STOPS = 10016

MARKET_CLOSED = 10018
FROZEN = 10029
INVALID_PRICE = 10015
INVALID_VOLUME = 10014
TRADE_DISABLED = 10017
CLOSE_ONLY = 10044

FILLED = frozenset({DONE, DONE_PARTIAL})
#: Refusals that pass: the same request may go through a little later (a
#: session break, a price near a frozen stop, a busy server, requotes that
#: outlasted the retries, a close filled only in part, algo trading switched
#: off for a while). A close refused so is tried again until the position is gone.
PASSING = frozenset({
    REQUOTE, PRICE_CHANGED, PRICE_OFF, DONE_PARTIAL, 10006, 10011, MARKET_CLOSED, 10028, FROZEN,
    TOO_MANY_REQUESTS, CONNECTION, 10026, 10027, TRADE_DISABLED,
})
#: Refusals that name a symbol setting (stops level, trade mode, volume, tick
#: grid): the setting is read again, as brokers change them during the day.
SYMBOL_SETTINGS = frozenset({INVALID_STOPS, INVALID_PRICE, INVALID_VOLUME, TRADE_DISABLED, CLOSE_ONLY, 10042, 10043})
#: Calls that answer a tuple of items: an empty one may come back as None.
LIST_CALLS = frozenset({"positions_get", "orders_get", "history_orders_get", "history_deals_get", "symbols_get"})

#: Retry at once with a fresh price.
RETRY_WITH_NEW_PRICE = frozenset({REQUOTE, PRICE_CHANGED, PRICE_OFF})
#: The order may or may not have reached the market, or is still being filled
#: (PLACED, under exchange execution): look it up, never resend.
OUTCOME_UNKNOWN = frozenset({PLACED, TIMEOUT, CONNECTION})

#: What a refusal means, in words a trader reads.
REFUSAL_REASONS = {
    10004: "requote: the price moved",
    10006: "request rejected by the broker",
    10007: "request cancelled",
    10011: "the broker could not process the request",
    10013: "invalid request",
    10014: "invalid volume",
    10015: "invalid price",
    10016: "invalid stops: stop loss or take profit too close to the price or on the wrong side",
    10017: "trading is disabled for this symbol",
    10018: "market closed",
    10019: "not enough money",
    10020: "the price changed",
    10021: "no quotes",
    10022: "invalid expiration",
    10023: "order changed",
    10024: "too many requests",
    10026: "algo trading is disabled by the broker",
    10027: "algo trading is off in the terminal (the Algo Trading button)",
    10028: "request locked for processing",
    10029: "order or position frozen",
    10030: "filling mode not supported",
    10031: "no connection to the trade server",
    10032: "only allowed on real accounts",
    10033: "too many pending orders",
    10034: "volume limit reached for this symbol",
    10035: "invalid order",
    10036: "position already closed",
    10038: "invalid close volume",
    10039: "a close order already exists",
    10040: "too many open positions",
    10041: "pending order activation rejected",
    10042: "only long positions allowed",
    10043: "only short positions allowed",
    10044: "only closing positions allowed",
    10045: "positions must be closed first in, first out",
    10046: "opposite positions not allowed",
}


def refusal_reason(retcode: int, comment: str = "") -> str:
    """A readable sentence for a refused order: the meaning of `retcode`, with
    the trade server's own comment when it adds something."""
    reason = REFUSAL_REASONS.get(retcode, f"refused by the broker (retcode {retcode})")
    comment = (comment or "").strip()
    if comment and comment.lower() not in reason.lower():
        reason = f"{reason} ({comment})"
    return reason


def passing(retcode) -> bool:
    """Whether a refusal with `retcode` may go through if tried again later."""
    return retcode in PASSING

"""
An in-process fake of the ``MetaTrader5`` Python module, for tests on Linux.

`FakeTerminal` is one terminal process logged into one trade account at a
simulated broker. An instance stands in for the module: it has the module's
functions (same names, signatures, return values and `last_error()` codes) and
its constants as class attributes, so an adapter written as
``mt5.positions_get(symbol="EURUSD")`` runs unchanged against
``mt5 = FakeTerminal()``. The behaviour follows ``/work/shared/mt5_facts.md``;
where the facts leave a choice open, the fake takes the stricter one, so that
code passing against it also passes against the real module.

Everything the real module returns is modelled: struct-sequence results (no
``_fields``, not picklable), None/False plus `last_error()` on failure, ``()``
for an empty result, keyword-only filters, broker server time in every epoch
field, floats at the boundary. Test controls (`advance`, `set_price`,
`close_by_hand`, the ``set_*`` toggles and the ``queue_*`` scripts) are plain
methods whose names the real module does not use.

Behaviours of real terminals and brokers that an adapter must survive, each
switchable per test (the default is what real terminals do most often):

- a deal filled only in part (`queue_partial`: 10010 DONE_PARTIAL, the rest of
  the position left open), and passing refusals (`queue_retcode`: 10018 at a
  session break, 10024, requotes; `trade_freeze_level` near a stop: 10029);
- a filling mode the trade server refuses on sending although `order_check`
  passed it (`set_send_refuses_filling`: 10030, as the MQL5 book warns that a
  passed check promises nothing);
- symbols whose tick size is larger than their point (``US500``: 0.25), prices
  off that grid refused (10015);
- symbol settings that change during the day (`set_stops_level`,
  `set_trade_mode`);
- comments cut to `comment_limit` characters where they are stored (16, as
  deals in the MQL5 book's own example are; None keeps them whole) and
  rewritten by the broker (`rewrite_comment`; exit deals get ``[sl ...]``);
- empty results as None with last_error success (`empty_as_none`), as some
  builds answer an empty history, rather than ``()``;
- a terminal that must be shut down before it is initialized again
  (`needs_shutdown_first`);
- a just-selected symbol with no quotes yet (`set_no_quotes`: a zero tick);
- stale ticks: a closed market's last tick keeps its time, however old.
"""

import collections
import datetime
import fnmatch
import operator
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------
# Constants, with the values the real module exports.

TIMEFRAME_M1 = 1
TIMEFRAME_M2 = 2
TIMEFRAME_M3 = 3
TIMEFRAME_M4 = 4
TIMEFRAME_M5 = 5
TIMEFRAME_M6 = 6
TIMEFRAME_M10 = 10
TIMEFRAME_M12 = 12
TIMEFRAME_M15 = 15
TIMEFRAME_M20 = 20
TIMEFRAME_M30 = 30
TIMEFRAME_H1 = 16385
TIMEFRAME_H2 = 16386
TIMEFRAME_H3 = 16387
TIMEFRAME_H4 = 16388
TIMEFRAME_H6 = 16390
TIMEFRAME_H8 = 16392
TIMEFRAME_H12 = 16396
TIMEFRAME_D1 = 16408
TIMEFRAME_W1 = 32769
TIMEFRAME_MN1 = 49153

TICK_FLAG_BID = 2
TICK_FLAG_ASK = 4

ORDER_TYPE_BUY = 0
ORDER_TYPE_SELL = 1
ORDER_TYPE_CLOSE_BY = 8

TRADE_ACTION_DEAL = 1
TRADE_ACTION_SLTP = 6
TRADE_ACTION_CLOSE_BY = 10

ORDER_FILLING_FOK = 0
ORDER_FILLING_IOC = 1
ORDER_FILLING_RETURN = 2
ORDER_FILLING_BOC = 3

ORDER_TIME_GTC = 0
ORDER_TIME_DAY = 1
ORDER_TIME_SPECIFIED = 2
ORDER_TIME_SPECIFIED_DAY = 3

ORDER_STATE_FILLED = 4

POSITION_TYPE_BUY = 0
POSITION_TYPE_SELL = 1

POSITION_REASON_CLIENT = 0
POSITION_REASON_MOBILE = 1
POSITION_REASON_WEB = 2
POSITION_REASON_EXPERT = 3

DEAL_TYPE_BUY = 0
DEAL_TYPE_SELL = 1
DEAL_TYPE_BALANCE = 2

DEAL_ENTRY_IN = 0
DEAL_ENTRY_OUT = 1
DEAL_ENTRY_INOUT = 2
DEAL_ENTRY_OUT_BY = 3

DEAL_REASON_CLIENT = 0
DEAL_REASON_MOBILE = 1
DEAL_REASON_WEB = 2
DEAL_REASON_EXPERT = 3
DEAL_REASON_SL = 4
DEAL_REASON_TP = 5
DEAL_REASON_SO = 6
DEAL_REASON_ROLLOVER = 7
DEAL_REASON_VMARGIN = 8
DEAL_REASON_SPLIT = 9

ORDER_REASON_CLIENT = 0
ORDER_REASON_MOBILE = 1
ORDER_REASON_WEB = 2
ORDER_REASON_EXPERT = 3
ORDER_REASON_SL = 4
ORDER_REASON_TP = 5
ORDER_REASON_SO = 6

ACCOUNT_TRADE_MODE_DEMO = 0
ACCOUNT_TRADE_MODE_CONTEST = 1
ACCOUNT_TRADE_MODE_REAL = 2

ACCOUNT_MARGIN_MODE_RETAIL_NETTING = 0
ACCOUNT_MARGIN_MODE_EXCHANGE = 1
ACCOUNT_MARGIN_MODE_RETAIL_HEDGING = 2

SYMBOL_TRADE_MODE_DISABLED = 0
SYMBOL_TRADE_MODE_LONGONLY = 1
SYMBOL_TRADE_MODE_SHORTONLY = 2
SYMBOL_TRADE_MODE_CLOSEONLY = 3
SYMBOL_TRADE_MODE_FULL = 4

SYMBOL_TRADE_EXECUTION_REQUEST = 0
SYMBOL_TRADE_EXECUTION_INSTANT = 1
SYMBOL_TRADE_EXECUTION_MARKET = 2
SYMBOL_TRADE_EXECUTION_EXCHANGE = 3

TRADE_RETCODE_REQUOTE = 10004
TRADE_RETCODE_REJECT = 10006
TRADE_RETCODE_CANCEL = 10007
TRADE_RETCODE_PLACED = 10008
TRADE_RETCODE_DONE = 10009
TRADE_RETCODE_DONE_PARTIAL = 10010
TRADE_RETCODE_ERROR = 10011
TRADE_RETCODE_TIMEOUT = 10012
TRADE_RETCODE_INVALID = 10013
TRADE_RETCODE_INVALID_VOLUME = 10014
TRADE_RETCODE_INVALID_PRICE = 10015
TRADE_RETCODE_INVALID_STOPS = 10016
TRADE_RETCODE_TRADE_DISABLED = 10017
TRADE_RETCODE_MARKET_CLOSED = 10018
TRADE_RETCODE_NO_MONEY = 10019
TRADE_RETCODE_PRICE_CHANGED = 10020
TRADE_RETCODE_PRICE_OFF = 10021
TRADE_RETCODE_INVALID_EXPIRATION = 10022
TRADE_RETCODE_ORDER_CHANGED = 10023
TRADE_RETCODE_TOO_MANY_REQUESTS = 10024
TRADE_RETCODE_NO_CHANGES = 10025
TRADE_RETCODE_SERVER_DISABLES_AT = 10026
TRADE_RETCODE_CLIENT_DISABLES_AT = 10027
TRADE_RETCODE_LOCKED = 10028
TRADE_RETCODE_FROZEN = 10029
TRADE_RETCODE_INVALID_FILL = 10030
TRADE_RETCODE_CONNECTION = 10031
TRADE_RETCODE_ONLY_REAL = 10032
TRADE_RETCODE_LIMIT_ORDERS = 10033
TRADE_RETCODE_LIMIT_VOLUME = 10034
TRADE_RETCODE_INVALID_ORDER = 10035
TRADE_RETCODE_POSITION_CLOSED = 10036
TRADE_RETCODE_INVALID_CLOSE_VOLUME = 10038
TRADE_RETCODE_CLOSE_ORDER_EXIST = 10039
TRADE_RETCODE_LIMIT_POSITIONS = 10040
TRADE_RETCODE_REJECT_CANCEL = 10041
TRADE_RETCODE_LONG_ONLY = 10042
TRADE_RETCODE_SHORT_ONLY = 10043
TRADE_RETCODE_CLOSE_ONLY = 10044
TRADE_RETCODE_FIFO_CLOSE = 10045

RES_S_OK = 1
RES_E_FAIL = -1
RES_E_INVALID_PARAMS = -2
RES_E_NO_MEMORY = -3
RES_E_NOT_FOUND = -4
RES_E_INVALID_VERSION = -5
RES_E_AUTH_FAILED = -6
RES_E_UNSUPPORTED = -7
RES_E_AUTO_TRADING_DISABLED = -8
RES_E_INTERNAL_FAIL = -10000
RES_E_INTERNAL_FAIL_SEND = -10001
RES_E_INTERNAL_FAIL_RECEIVE = -10002
RES_E_INTERNAL_FAIL_INIT = -10003
RES_E_INTERNAL_FAIL_CONNECT = -10004
RES_E_INTERNAL_FAIL_TIMEOUT = -10005

#: Every constant above, by name: copied onto `FakeTerminal` as class attributes.
MT5_CONSTANTS = {
    name: value
    for name, value in globals().items()
    if name.isupper() and not name.startswith("_") and isinstance(value, int)
}

# ---------------------------------------------------------------------------
# Result types: look-alikes of the C struct-sequences the real module returns.


class _Struct(tuple):
    """Base of the result types: a read-only tuple with named fields, as the
    real module's C struct-sequences. Fields read by name or index;
    ``_asdict()`` gives a dict; there is no ``_fields`` and pickling fails.
    Built with every field as a keyword argument."""

    __slots__ = ()
    __match_args__ = ()

    def __new__(cls, **values):
        names = cls.__match_args__
        if set(values) != set(names):
            raise TypeError(f"{cls.__name__} needs exactly the fields {names}")
        return tuple.__new__(cls, [values[name] for name in names])

    def __repr__(self):
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self.__match_args__, self))
        return f"{type(self).__name__}({fields})"

    def _asdict(self):
        """The fields as a dict, in order."""
        return dict(zip(self.__match_args__, self))

    def __reduce__(self):
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")

    def __reduce_ex__(self, protocol):
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")


def _struct_type(name, fields):
    """A `_Struct` subclass called `name` with the space-separated `fields`."""
    names = tuple(fields.split())
    namespace = {
        "__slots__": (),
        "__match_args__": names,
        "__doc__": f"The real module's {name} result: a struct-sequence of {len(names)} fields.",
        "n_fields": len(names),
        "n_sequence_fields": len(names),
        "n_unnamed_fields": 0,
    }
    for index, field in enumerate(names):
        namespace[field] = property(operator.itemgetter(index), doc=f"Field {index}: {field}.")
    return type(name, (_Struct,), namespace)


AccountInfo = _struct_type(
    "AccountInfo",
    "login trade_mode leverage limit_orders margin_so_mode trade_allowed trade_expert margin_mode"
    " currency_digits fifo_close balance credit profit equity margin margin_free margin_level"
    " margin_so_call margin_so_so margin_initial margin_maintenance assets liabilities"
    " commission_blocked name server currency company",
)
TerminalInfo = _struct_type(
    "TerminalInfo",
    "community_account community_connection connected dlls_allowed trade_allowed tradeapi_disabled"
    " email_enabled ftp_enabled notifications_enabled mqid build maxbars codepage ping_last"
    " community_balance retransmission company name language path data_path commondata_path",
)
_SYMBOL_FIELDS = (
    "custom chart_mode select visible session_deals session_buy_orders session_sell_orders volume"
    " volumehigh volumelow time digits spread spread_float ticks_bookdepth trade_calc_mode trade_mode"
    " start_time expiration_time trade_stops_level trade_freeze_level trade_exemode swap_mode"
    " swap_rollover3days margin_hedged_use_leg expiration_mode filling_mode order_mode order_gtc_mode"
    " option_mode option_right bid bidhigh bidlow ask askhigh asklow last lasthigh lastlow volume_real"
    " volumehigh_real volumelow_real option_strike point trade_tick_value trade_tick_value_profit"
    " trade_tick_value_loss trade_tick_size trade_contract_size trade_accrued_interest trade_face_value"
    " trade_liquidity_rate volume_min volume_max volume_step volume_limit swap_long swap_short"
    " margin_initial margin_maintenance session_volume session_turnover session_interest"
    " session_buy_orders_volume session_sell_orders_volume session_open session_close session_aw"
    " session_price_settlement session_price_limit_min session_price_limit_max margin_hedged"
    " price_change price_volatility price_theoretical price_greeks_delta price_greeks_theta"
    " price_greeks_gamma price_greeks_vega price_greeks_rho price_greeks_omega price_sensitivity basis"
    " category currency_base currency_profit currency_margin bank description exchange formula isin"
    " name page path"
)
SymbolInfo = _struct_type("SymbolInfo", _SYMBOL_FIELDS)
Tick = _struct_type("Tick", "time bid ask last volume time_msc flags volume_real")
TradePosition = _struct_type(
    "TradePosition",
    "ticket time time_msc time_update time_update_msc type magic identifier reason volume price_open"
    " sl tp price_current swap profit symbol comment external_id",
)
TradeOrder = _struct_type(
    "TradeOrder",
    "ticket time_setup time_setup_msc time_done time_done_msc time_expiration type type_time"
    " type_filling state magic position_id position_by_id reason volume_initial volume_current"
    " price_open sl tp price_current price_stoplimit symbol comment external_id",
)
TradeDeal = _struct_type(
    "TradeDeal",
    "ticket order time time_msc type entry magic position_id reason volume price commission swap"
    " profit fee symbol comment external_id",
)
TradeRequest = _struct_type(
    "TradeRequest",
    "action magic order symbol volume price stoplimit sl tp deviation type type_filling type_time"
    " expiration comment position position_by",
)
OrderSendResult = _struct_type(
    "OrderSendResult",
    "retcode deal order volume price bid ask comment request_id retcode_external request",
)
OrderCheckResult = _struct_type(
    "OrderCheckResult",
    "retcode balance equity profit margin margin_free margin_level comment request",
)

# ---------------------------------------------------------------------------
# Defaults: the symbol catalogue, the request layout, the clock.

#: 2026-01-05 08:00:00 UTC, a Monday.
DEFAULT_START = datetime.datetime(2026, 1, 5, 8, 0, tzinfo=datetime.timezone.utc)

_ACCOUNT_CURRENCY = "USD"
_HISTORY_BARS = 500  # complete M1 bars made up at construction
_MAX_BARS = 2000  # M1 bars kept per symbol
_ORDER_TICKETS_FROM = 50000001  # orders and positions
_DEAL_TICKETS_FROM = 60000001
_VOLUME_EPS = 1e-9

_SYMBOL_BOOLS = {"custom", "select", "visible", "spread_float", "margin_hedged_use_leg"}
_SYMBOL_STRS = set(
    "basis category currency_base currency_profit currency_margin bank description exchange formula"
    " isin name page path".split()
)
_SYMBOL_INTS = set(
    "chart_mode session_deals session_buy_orders session_sell_orders volume volumehigh volumelow time"
    " digits spread ticks_bookdepth trade_calc_mode trade_mode start_time expiration_time"
    " trade_stops_level trade_freeze_level trade_exemode swap_mode swap_rollover3days expiration_mode"
    " filling_mode order_mode order_gtc_mode option_mode option_right".split()
)


def _blank_symbol():
    """Every SymbolInfo field at its zero value, as its real type."""
    blank = {}
    for name in SymbolInfo.__match_args__:
        if name in _SYMBOL_BOOLS:
            blank[name] = False
        elif name in _SYMBOL_STRS:
            blank[name] = ""
        elif name in _SYMBOL_INTS:
            blank[name] = 0
        else:
            blank[name] = 0.0
    return blank


#: What every catalogue symbol shares: full trading, market execution, FOK+IOC,
#: 0.01..100 lots, every order kind and expiration allowed.
_COMMON_SPEC = dict(
    trade_mode=SYMBOL_TRADE_MODE_FULL,
    trade_exemode=SYMBOL_TRADE_EXECUTION_MARKET,
    filling_mode=1 | 2,
    order_mode=127,
    expiration_mode=15,
    swap_mode=1,
    swap_rollover3days=3,
    volume_min=0.01,
    volume_max=100.0,
    volume_step=0.01,
    margin_hedged=50000.0,
    trade_stops_level=10,
    trade_freeze_level=0,
)

#: The default catalogue. ``bid`` is the starting bid and ``volatility`` the
#: standard deviation of the bid's per-second step, in points; both are the
#: fake's own settings, every other key is a SymbolInfo field.
CATALOGUE = {
    "EURUSD": dict(
        _COMMON_SPEC, description="Euro vs US Dollar", path="Forex\\Majors\\EURUSD", digits=5, spread=10,
        trade_contract_size=100000.0, swap_long=-6.8, swap_short=1.9,
        currency_base="EUR", currency_profit="USD", currency_margin="EUR", bid=1.085, volatility=3.0,
    ),
    "GBPUSD": dict(
        _COMMON_SPEC, description="Great Britain Pound vs US Dollar", path="Forex\\Majors\\GBPUSD", digits=5,
        spread=12, trade_contract_size=100000.0, swap_long=-4.1, swap_short=-0.9,
        currency_base="GBP", currency_profit="USD", currency_margin="GBP", bid=1.265, volatility=3.0,
    ),
    "USDJPY": dict(
        _COMMON_SPEC, description="US Dollar vs Japanese Yen", path="Forex\\Majors\\USDJPY", digits=3,
        spread=12, trade_contract_size=100000.0, swap_long=12.5, swap_short=-25.3,
        currency_base="USD", currency_profit="JPY", currency_margin="USD", bid=157.0, volatility=3.0,
    ),
    "US500": dict(
        _COMMON_SPEC, description="US 500 Cash CFD", path="Indices\\US500", digits=2, spread=50,
        trade_tick_size=0.25, trade_stops_level=100, trade_calc_mode=2, trade_contract_size=1.0,
        swap_long=-3.0, swap_short=-1.0, volume_min=0.1, volume_step=0.1,
        currency_base="USD", currency_profit="USD", currency_margin="USD", bid=6000.0, volatility=25.0,
    ),
    "XAUUSD": dict(
        _COMMON_SPEC, description="Gold vs US Dollar", path="Metals\\XAUUSD", digits=2, spread=20,
        trade_stops_level=20, filling_mode=2, trade_calc_mode=4, trade_contract_size=100.0,
        swap_long=-45.0, swap_short=20.0,
        currency_base="XAU", currency_profit="USD", currency_margin="XAU", bid=2650.0, volatility=30.0,
    ),
}

#: Request fields and the exact builtin type each must have; omitted fields are 0.
_REQUEST_FIELDS = dict(
    action=int, magic=int, order=int, symbol=str, volume=float, price=float, stoplimit=float,
    sl=float, tp=float, deviation=int, type=int, type_filling=int, type_time=int, expiration=int,
    comment=str, position=int, position_by=int,
)
_COMMENT_MAX = 31
_COMMENT_FORBIDDEN = set("[]():=,")

#: The comment the trade server puts on a result, by retcode.
_RETCODE_COMMENTS = {
    10004: "Requote", 10006: "Request rejected", 10007: "Request canceled by trader",
    10008: "Order placed", 10009: "Request executed", 10010: "Request executed partially",
    10011: "Request processing error", 10012: "Request canceled by timeout", 10013: "Invalid request",
    10014: "Invalid volume", 10015: "Invalid price", 10016: "Invalid stops", 10017: "Trade disabled",
    10018: "Market closed", 10019: "No money", 10020: "Prices changed", 10021: "No quotes",
    10022: "Invalid expiration", 10023: "Order state changed", 10024: "Too many requests",
    10025: "No changes", 10026: "Autotrading disabled by server", 10027: "Autotrading disabled by client",
    10028: "Request locked", 10029: "Order or position frozen", 10030: "Unsupported filling mode",
    10031: "No connection", 10032: "Only real accounts allowed", 10033: "Orders limit reached",
    10034: "Volume limit reached", 10035: "Invalid order", 10036: "Position already closed",
    10038: "Invalid close volume", 10039: "Close order already exists", 10040: "Positions limit reached",
    10041: "Pending order activation rejected", 10042: "Only long positions allowed",
    10043: "Only short positions allowed", 10044: "Only position closing allowed",
    10045: "Position closing allowed only by FIFO rule",
}

_RATES_DTYPE = np.dtype(
    [("time", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"),
     ("tick_volume", "<u8"), ("spread", "<i4"), ("real_volume", "<u8")]
)
_TIMEFRAME_SECONDS = {
    **{tf: tf * 60 for tf in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)},
    **{0x4000 | hours: hours * 3600 for hours in (1, 2, 3, 4, 6, 8, 12, 24)},
}
_SUNDAY = 3 * 86400  # 1970-01-04, the first Sunday after the epoch: weeks start on Sunday

_MANUAL_REASONS = (DEAL_REASON_CLIENT, DEAL_REASON_MOBILE, DEAL_REASON_WEB)
#: The calls that answer a tuple of items (empty: ``()``, or None with `empty_as_none`).
_LIST_CALLS = {"positions_get", "orders_get", "history_orders_get", "history_deals_get", "symbols_get"}


# ---------------------------------------------------------------------------
# Helpers.


def _cents(amount):
    """Money rounded to cents, never -0.0."""
    return round(amount, 2) + 0.0


def _lots(volume):
    """A volume with the float noise of arithmetic removed."""
    return round(volume, 8) + 0.0


def _opposite(side):
    """The order type that closes a position of type `side`."""
    return ORDER_TYPE_SELL if side == ORDER_TYPE_BUY else ORDER_TYPE_BUY


def _is_int(value):
    """True for a builtin int, not a bool nor a numpy integer."""
    return type(value) is int


def _matches_group(name, group):
    """Whether symbol `name` passes an MT5 group mask such as ``"*USD*,!EUR*"``:
    the last pattern that matches decides, ``!`` patterns exclude."""
    selected = False
    for pattern in group.split(","):
        pattern = pattern.strip().upper()
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(name.upper(), pattern[1:]):
                selected = False
        elif pattern and fnmatch.fnmatchcase(name.upper(), pattern):
            selected = True
    return selected


def _bar_starts(timeframe, times):
    """The open time of the `timeframe` bar each epoch in `times` falls in."""
    if timeframe == TIMEFRAME_W1:
        return (times - _SUNDAY) // 604800 * 604800 + _SUNDAY
    if timeframe == TIMEFRAME_MN1:
        months = times.astype("datetime64[s]").astype("datetime64[M]")
        return months.astype("datetime64[s]").astype(np.int64)
    seconds = _TIMEFRAME_SECONDS[timeframe]
    return times // seconds * seconds


def _valid_timeframe(timeframe):
    """Whether `timeframe` is one of the module's TIMEFRAME_* values."""
    return _is_int(timeframe) and (
        timeframe in _TIMEFRAME_SECONDS or timeframe in (TIMEFRAME_W1, TIMEFRAME_MN1)
    )


class _CallFailed(Exception):
    """Internal: an API call fails with this last_error."""

    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message


def _invalid(name):
    """The -2 failure for argument `name`."""
    return _CallFailed(RES_E_INVALID_PARAMS, f'Invalid "{name}" argument')


def _epoch(value, name):
    """A date argument as epoch seconds: an int as is, a datetime through
    ``.timestamp()`` (so a naive one is read in the local zone, as the real
    binary does)."""
    if _is_int(value):
        return value
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    raise _invalid(name)


# ---------------------------------------------------------------------------
# Simulation state.


class _Symbol:
    """One symbol: its static specification and its market, prices held as
    integer numbers of points."""

    def __init__(self, name, spec, selected):
        spec = dict(spec)
        self.name = name
        bid = spec.pop("bid")
        self.volatility = spec.pop("volatility")
        unknown = set(spec) - set(SymbolInfo.__match_args__)
        if unknown:
            raise ValueError(f"{name}: not SymbolInfo fields: {sorted(unknown)}")
        self.info = dict(_blank_symbol(), **spec, name=name)
        if not self.info["point"]:
            self.info["point"] = 10.0 ** -self.info["digits"]
        if not self.info["trade_tick_size"]:
            self.info["trade_tick_size"] = self.info["point"]
        self.digits = self.info["digits"]
        self.point = self.info["point"]
        self.spread = self.info["spread"]
        self.selected = selected
        self.market_closed = False
        self.no_quotes = False
        #: points a tick moves by: prices stay on the tick-size grid
        self.grid = max(1, int(round(self.info["trade_tick_size"] / self.point)))
        self.bid = self.snap(self.points(bid))
        self.tick_msc = 0
        self.bars = collections.deque(maxlen=_MAX_BARS)  # [time, open, high, low, close, ticks]

    @property
    def ask(self):
        """The ask in points."""
        return self.bid + self.spread

    def price(self, points):
        """A price in points as the float the API shows."""
        return round(points * self.point, self.digits) + 0.0

    def points(self, price):
        """A price as a whole number of points."""
        return int(round(price / self.point))

    def snap(self, points):
        """`points` on the tick-size grid."""
        return int(round(points / self.grid)) * self.grid

    def on_grid(self, price):
        """Whether `price` is a multiple of the tick size."""
        ticks = price / self.info["trade_tick_size"]
        return abs(ticks - round(ticks)) < 1e-6

    def text(self, points):
        """A price in points written with the symbol's digits."""
        return f"{self.price(points):.{self.digits}f}"

    def quote(self, side):
        """The price an order of type `side` fills at: ask for BUY, bid for SELL."""
        return self.ask if side == ORDER_TYPE_BUY else self.bid

    def exit_quote(self, side):
        """The price a position of type `side` closes at: bid for BUY, ask for SELL."""
        return self.bid if side == ORDER_TYPE_BUY else self.ask

    def tick(self, server_msc):
        """Record a tick of the current bid at `server_msc` in the M1 bars."""
        self.tick_msc = server_msc
        minute = server_msc // 60000 * 60
        bar = self.bars[-1] if self.bars else None
        if bar is not None and bar[0] == minute:
            bar[2] = max(bar[2], self.bid)
            bar[3] = min(bar[3], self.bid)
            bar[4] = self.bid
            bar[5] += 1
        else:
            self.bars.append([minute, self.bid, self.bid, self.bid, self.bid, 1])

    def prefill(self, rng, server_now):
        """Make up `_HISTORY_BARS` complete M1 bars before `server_now`, one
        tick a second, ending at the starting bid, plus the forming bar."""
        now = int(server_now)
        times = np.arange((now // 60 - _HISTORY_BARS) * 60, now + 1, dtype=np.int64)
        walk = np.cumsum(np.rint(rng.normal(0.0, self.volatility, len(times))).astype(np.int64))
        prices = np.maximum(self.bid + walk - walk[-1], 1)
        minutes = times // 60 * 60
        starts = np.flatnonzero(np.r_[True, minutes[1:] != minutes[:-1]])
        ends = np.r_[starts[1:], len(times)] - 1
        rows = np.column_stack([
            minutes[starts], prices[starts], np.maximum.reduceat(prices, starts),
            np.minimum.reduceat(prices, starts), prices[ends], ends - starts + 1,
        ])
        self.bars.extend(rows.tolist())
        self.tick_msc = int(round(server_now * 1000))

    def rates(self, timeframe):
        """Every bar of `timeframe` that the kept M1 bars make, oldest first,
        the last one forming, as the module's structured array."""
        bars = np.array(self.bars, dtype=np.int64)
        keys = _bar_starts(timeframe, bars[:, 0])
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)] - 1
        rates = np.zeros(len(starts), dtype=_RATES_DTYPE)
        rates["time"] = keys[starts]
        rates["open"] = np.round(bars[starts, 1] * self.point, self.digits)
        rates["high"] = np.round(np.maximum.reduceat(bars[:, 2], starts) * self.point, self.digits)
        rates["low"] = np.round(np.minimum.reduceat(bars[:, 3], starts) * self.point, self.digits)
        rates["close"] = np.round(bars[ends, 4] * self.point, self.digits)
        rates["tick_volume"] = np.add.reduceat(bars[:, 5], starts)
        rates["spread"] = self.spread
        return rates


@dataclass
class _Position:
    """An open position; prices in points, 0 meaning no SL/TP."""

    ticket: int
    identifier: int
    symbol: str
    type: int
    volume: float
    price_open: int
    sl: int
    tp: int
    magic: int
    comment: str
    reason: int
    time_msc: int
    time_update_msc: int
    swap: float = 0.0


@dataclass
class _Plan:
    """What a TRADE_ACTION_DEAL request would do: close `close_volume` of
    `position` and open (or add) `open_volume` on the request's side."""

    position: object = None
    close_volume: float = 0.0
    open_volume: float = 0.0


# ---------------------------------------------------------------------------
# The terminal.


class FakeTerminal:
    """One MetaTrader 5 terminal logged into one account at a simulated broker,
    usable in place of the ``MetaTrader5`` module.

    The MT5 API methods keep the real names, signatures and failure modes. The
    rest is the test's:

    Attributes
        ``calls``: a `collections.Counter` of the API functions called, by name.
        ``login_calls``: how many `login` / `initialize` calls carried credentials.
        ``now``: the fake's UTC clock, float epoch seconds.
        ``server_offset``: the broker's server time minus UTC, seconds; every
        epoch the API returns or takes is UTC + this.
        ``commission_per_lot``: charged per lot on every IN and OUT deal.
        ``fee_per_deal``: charged as ``fee`` on every trade deal.

    Controls: `advance`, `set_price`, `set_market_closed`, `set_trade_mode`,
    `close_by_hand`, `stop_out`, `charge_swap`, `disappear`, `come_back`,
    `set_connected`, `set_algo_trading`, `set_tradeapi_disabled`,
    `queue_retcode`, `queue_none`, `queue_delay_deals`; `server_now` reads
    the server clock.
    """

    def __init__(
        self,
        *,
        seed=1,
        start=DEFAULT_START,
        server_offset=7200,
        login=51234567,
        password="demo-pass",
        server="FakeBroker-Demo",
        account_name="Test Trader",
        company="Fake Broker Ltd",
        balance=10000.0,
        leverage=100,
        margin_mode=ACCOUNT_MARGIN_MODE_RETAIL_HEDGING,
        account_trade_allowed=True,
        trade_expert=True,
        fifo_close=False,
        commission_per_lot=3.5,
        fee_per_deal=0.0,
        path="C:\\Program Files\\MetaTrader 5\\terminal64.exe",
        build=4755,
        maxbars=100000,
        symbols=None,
        market_watch=(),
        logged_in=True,
        comment_limit=16,
        empty_as_none=False,
        needs_shutdown_first=False,
    ):
        """`symbols` maps names to SymbolInfo field overrides (plus ``bid`` and
        ``volatility``) merged onto `CATALOGUE`; a new name starts from a copy
        of EURUSD. `market_watch` lists the symbols selected at start."""
        self.calls = collections.Counter()
        self.login_calls = 0
        self.now = start.timestamp() if isinstance(start, datetime.datetime) else float(start)
        self.server_offset = server_offset
        self.commission_per_lot = commission_per_lot
        self.fee_per_deal = fee_per_deal

        self._account = dict(
            login=login, password=password, server=server, name=account_name, company=company,
            leverage=leverage, margin_mode=margin_mode, trade_allowed=account_trade_allowed,
            trade_expert=trade_expert, fifo_close=fifo_close,
        )
        self._terminal = dict(path=path, build=build, maxbars=maxbars, company=company)
        self._running = True  # the terminal process exists
        self._ipc = False  # initialize() succeeded and no shutdown since
        self._connected = True  # the broker link
        # False: a terminal started with no saved account; account_info fails until a login
        self._logged_in = logged_in
        self._algo_trading = True
        self._tradeapi_disabled = False
        #: stored comments are cut to this many characters (None: kept whole)
        self.comment_limit = comment_limit
        #: empty positions, orders and history come back None (last_error success), not ()
        self.empty_as_none = empty_as_none
        #: initialize after an earlier one fails until shutdown is called
        self.needs_shutdown_first = needs_shutdown_first
        self._initialized_before = False
        self._partial = collections.deque()  # volumes the next order_sends fill, in part
        self._send_refuses = {}  # symbol -> filling modes order_send refuses (10030)
        self._last_error = (RES_S_OK, "Success")
        self._stale_ticks = None  # the ticks seen when the broker link dropped

        self._rng = np.random.default_rng(seed)
        specs = {name: dict(spec) for name, spec in CATALOGUE.items()}
        for name, overrides in (symbols or {}).items():
            base = specs.get(name) or dict(CATALOGUE["EURUSD"], description=name, path=name)
            specs[name] = dict(base, **overrides)
        unknown = set(market_watch) - set(specs)
        if unknown:
            raise ValueError(f"market_watch names unknown symbols {sorted(unknown)}")
        self._symbols = {name: _Symbol(name, spec, name in market_watch) for name, spec in specs.items()}
        for symbol in self._symbols.values():
            symbol.prefill(self._rng, self.server_now)

        self._positions = {}  # identifier -> _Position
        self._orders = []  # TradeOrder, history
        self._deals = []  # TradeDeal, history
        self._hidden_deals = {}  # deal ticket -> history calls it stays hidden from
        self._deal_delay = 0
        self._queue = collections.deque()  # scripted order_send answers
        self._next_order = _ORDER_TICKETS_FROM
        self._next_deal = _DEAL_TICKETS_FROM
        self._next_request = 1
        self._balance = 0.0
        self._record_deal(
            0, "", DEAL_TYPE_BALANCE, DEAL_ENTRY_IN, 0.0, 0.0, position_id=0, reason=DEAL_REASON_CLIENT,
            magic=0, comment="Deposit", profit=balance, msc=int(round((self.server_now - 86400) * 1000)),
        )

    # -- clock ------------------------------------------------------------

    @property
    def server_now(self):
        """The broker's server wall clock as an epoch: `now` + `server_offset`."""
        return self.now + self.server_offset

    def _server_msc(self):
        return int(round(self.server_now * 1000))

    # -- API plumbing -----------------------------------------------------

    def _begin(self, name):
        """Count a call to API function `name`; fail it when there is no IPC link."""
        self.calls[name] += 1
        if not self._ipc:
            raise _CallFailed(RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")

    def _call(self, name, body, failed=None):
        """Run the API call `name`: `body()`'s value with last_error Success, or
        `failed` with the error it raised."""
        try:
            self._begin(name)
            value = body()
        except _CallFailed as error:
            self._last_error = (error.code, error.message)
            return failed
        self._last_error = (RES_S_OK, "Success")
        if self.empty_as_none and name in _LIST_CALLS and value == ():
            return None
        return value

    def _symbol(self, name, argument="symbol"):
        """The known symbol `name`; -2 for a non-string, -4 for an unknown name."""
        if type(name) is not str:
            raise _invalid(argument)
        symbol = self._symbols.get(name)
        if symbol is None:
            raise _CallFailed(RES_E_NOT_FOUND, "Terminal: Not found")
        return symbol

    def _selected_symbol(self, name):
        """The known symbol `name`, failing unless it is in Market Watch."""
        symbol = self._symbol(name)
        if not symbol.selected:
            raise _CallFailed(RES_E_FAIL, "Terminal: Call failed")
        return symbol

    @staticmethod
    def _no_unnamed(args):
        if args:
            raise _CallFailed(RES_E_INVALID_PARAMS, "Unnamed arguments not allowed")

    # -- connection -------------------------------------------------------

    def initialize(self, path=None, *, login=None, password=None, server=None, timeout=60000, portable=False):
        """Connect to the terminal (and, with credentials, log into the account)."""
        self.calls["initialize"] += 1
        try:
            self._check_credential_types(login, password, server, timeout)
            if path is not None and type(path) is not str:
                raise _invalid("path")
            if type(portable) is not bool:
                raise _invalid("portable")
            if not self._running or (path is not None and path.lower() != self._terminal["path"].lower()):
                raise _CallFailed(RES_E_INTERNAL_FAIL_INIT, "IPC initialize failed, MetaTrader 5 x64 not found")
            if self.needs_shutdown_first and self._initialized_before:
                raise _CallFailed(RES_E_INTERNAL_FAIL, "IPC initialize failed, call shutdown first")
            if login is not None or password is not None:
                self._authorize(login, password, server)
        except _CallFailed as error:
            self._ipc = False
            self._last_error = (error.code, error.message)
            return False
        self._initialized_before = True
        self._ipc = True
        self._last_error = (RES_S_OK, "Success")
        return True

    def login(self, login, *, password=None, server=None, timeout=60000):
        """Log the terminal into an account."""

        def body():
            self._check_credential_types(login, password, server, timeout)
            if login is None:
                raise _invalid("login")
            self._authorize(login, password, server)
            return True

        return self._call("login", body, False)

    @staticmethod
    def _check_credential_types(login, password, server, timeout):
        for name, value, kind in (("login", login, int), ("password", password, str), ("server", server, str)):
            if value is not None and type(value) is not kind:
                raise _invalid(name)
        if not _is_int(timeout):
            raise _invalid("timeout")

    def _authorize(self, login, password, server):
        """Check credentials against the one account the fake knows; log in."""
        self.login_calls += 1
        account = self._account
        if (
            (login is not None and login != account["login"])
            or (password is not None and password != account["password"])
            or (server is not None and server != account["server"])
        ):
            raise _CallFailed(RES_E_AUTH_FAILED, "Terminal: Authorization failed")
        self._logged_in = True

    def shutdown(self):
        """Close the IPC connection."""
        self.calls["shutdown"] += 1
        self._ipc = False
        self._initialized_before = False
        self._last_error = (RES_S_OK, "Success")

    def version(self):
        """``(terminal_version, build, release_date)``."""
        return self._call("version", lambda: (500, self._terminal["build"], "20 Jan 2025"))

    def last_error(self):
        """``(code, message)`` of the last call."""
        self.calls["last_error"] += 1
        return self._last_error

    # -- account and terminal --------------------------------------------

    def account_info(self):
        """The account: AccountInfo (fails while no account is logged in)."""

        def body():
            if not self._logged_in:
                raise _CallFailed(RES_E_AUTH_FAILED, "Terminal: Authorization failed")
            return self._account_info()

        return self._call("account_info", body)

    def _account_info(self):
        account = self._account
        floating = _cents(sum(self._floating(position) for position in self._positions.values()))
        equity = _cents(self._balance + floating)
        margin = self._used_margin()
        return AccountInfo(
            login=account["login"], trade_mode=ACCOUNT_TRADE_MODE_DEMO, leverage=account["leverage"],
            limit_orders=200, margin_so_mode=0, trade_allowed=account["trade_allowed"],
            trade_expert=account["trade_expert"], margin_mode=account["margin_mode"], currency_digits=2,
            fifo_close=account["fifo_close"], balance=self._balance, credit=0.0, profit=floating,
            equity=equity, margin=margin, margin_free=_cents(equity - margin),
            margin_level=_cents(equity / margin * 100) if margin else 0.0, margin_so_call=50.0,
            margin_so_so=30.0, margin_initial=0.0, margin_maintenance=0.0, assets=0.0, liabilities=0.0,
            commission_blocked=0.0, name=account["name"], server=account["server"],
            currency=_ACCOUNT_CURRENCY, company=account["company"],
        )

    def terminal_info(self):
        """The terminal: TerminalInfo."""
        terminal = self._terminal
        folder = terminal["path"].rsplit("\\", 1)[0]
        roaming = "C:\\Users\\trader\\AppData\\Roaming\\MetaQuotes\\Terminal"
        return self._call("terminal_info", lambda: TerminalInfo(
            community_account=False, community_connection=False, connected=self._connected,
            dlls_allowed=False, trade_allowed=self._algo_trading, tradeapi_disabled=self._tradeapi_disabled,
            email_enabled=False, ftp_enabled=False, notifications_enabled=False, mqid=False,
            build=terminal["build"], maxbars=terminal["maxbars"], codepage=0,
            ping_last=35000 if self._connected else 0, community_balance=0.0, retransmission=0.0,
            company=terminal["company"], name="MetaTrader 5", language="English", path=folder,
            data_path=roaming + "\\D0E8209F77C8CF37AD8BF550E51FF075",
            commondata_path=roaming + "\\Common",
        ))

    # -- symbols and ticks ------------------------------------------------

    def symbols_total(self):
        """How many symbols the broker offers."""
        return self._call("symbols_total", lambda: len(self._symbols))

    def symbols_get(self, group=None):
        """Every symbol (optionally those matching a group mask): tuple of SymbolInfo."""

        def body():
            if group is not None and type(group) is not str:
                raise _invalid("group")
            names = [name for name in self._symbols if group is None or _matches_group(name, group)]
            return tuple(self._symbol_info(self._symbols[name]) for name in names)

        return self._call("symbols_get", body)

    def symbol_info(self, symbol):
        """A symbol's specification and state: SymbolInfo (visible False until selected)."""
        return self._call("symbol_info", lambda: self._symbol_info(self._symbol(symbol)))

    def _symbol_info(self, symbol):
        info = dict(symbol.info, select=symbol.selected, visible=symbol.selected)
        info["trade_tick_value"] = info["trade_tick_value_profit"] = info["trade_tick_value_loss"] = (
            self._to_account(symbol, info["trade_tick_size"] * info["trade_contract_size"], symbol.price(symbol.bid))
        )
        if symbol.selected:
            tick = self._tick(symbol)
            info.update(time=tick.time, bid=tick.bid, ask=tick.ask)
        return SymbolInfo(**info)

    def symbol_info_tick(self, symbol):
        """The last tick of a symbol in Market Watch: Tick."""
        return self._call("symbol_info_tick", lambda: self._tick(self._selected_symbol(symbol)))

    def _tick(self, symbol):
        if self._stale_ticks is not None:
            return self._stale_ticks[symbol.name]
        if symbol.no_quotes:  # selected, but no quote has come yet
            return Tick(time=0, bid=0.0, ask=0.0, last=0.0, volume=0, time_msc=0, flags=0, volume_real=0.0)
        return Tick(
            time=symbol.tick_msc // 1000, bid=symbol.price(symbol.bid), ask=symbol.price(symbol.ask), last=0.0,
            volume=0, time_msc=symbol.tick_msc, flags=TICK_FLAG_BID | TICK_FLAG_ASK, volume_real=0.0,
        )

    def symbol_select(self, symbol, enable=True):
        """Add a symbol to Market Watch (or remove it, unless positions are open on it)."""

        def body():
            found = self._symbol(symbol)
            if type(enable) is not bool:
                raise _invalid("enable")
            if not enable and any(p.symbol == symbol for p in self._positions.values()):
                raise _CallFailed(RES_E_FAIL, "Terminal: Call failed")
            found.selected = enable
            return True

        return self._call("symbol_select", body, False)

    # -- bars -------------------------------------------------------------

    def _rates(self, symbol, timeframe):
        """All bars of a selected symbol, capped at maxbars."""
        found = self._selected_symbol(symbol)
        if not _valid_timeframe(timeframe):
            raise _invalid("timeframe")
        return found.rates(timeframe)[-self._terminal["maxbars"]:]

    @staticmethod
    def _found(rates):
        if len(rates) == 0:
            raise _CallFailed(RES_E_NOT_FOUND, "Terminal: Not found")
        return rates

    @staticmethod
    def _check_count(count):
        if not _is_int(count) or count <= 0:
            raise _invalid("count")

    def copy_rates_from_pos(self, symbol, timeframe, start_pos, count):
        """`count` bars ending `start_pos` bars back from the forming bar (pos 0)."""

        def body():
            rates = self._rates(symbol, timeframe)
            self._check_count(count)
            if not _is_int(start_pos) or start_pos < 0:
                raise _invalid("start_pos")
            end = len(rates) - start_pos
            return self._found(rates[max(0, end - count):max(0, end)])

        return self._call("copy_rates_from_pos", body)

    def copy_rates_from(self, symbol, timeframe, date_from, count):
        """`count` bars opened at or before `date_from` (server time)."""

        def body():
            rates = self._rates(symbol, timeframe)
            self._check_count(count)
            rates = rates[rates["time"] <= _epoch(date_from, "date_from")]
            return self._found(rates[-count:])

        return self._call("copy_rates_from", body)

    def copy_rates_range(self, symbol, timeframe, date_from, date_to):
        """The bars opened between `date_from` and `date_to` (server time)."""

        def body():
            rates = self._rates(symbol, timeframe)
            start, end = _epoch(date_from, "date_from"), _epoch(date_to, "date_to")
            return self._found(rates[(rates["time"] >= start) & (rates["time"] <= end)])

        return self._call("copy_rates_range", body)

    # -- positions and orders ---------------------------------------------

    def _filtered(self, items, symbol, group, ticket, ticket_of):
        """Items whose symbol is `symbol`, else matching `group`, else with ticket `ticket`."""
        if symbol is not None and type(symbol) is not str:
            raise _invalid("symbol")
        if group is not None and type(group) is not str:
            raise _invalid("group")
        if ticket is not None and not _is_int(ticket):
            raise _invalid("ticket")
        if symbol is not None:
            return tuple(item for item in items if item.symbol == symbol)
        if group is not None:
            return tuple(item for item in items if _matches_group(item.symbol, group))
        if ticket is not None:
            return tuple(item for item in items if ticket_of(item) == ticket)
        return tuple(items)

    def positions_get(self, *args, symbol=None, group=None, ticket=None):
        """Open positions: tuple of TradePosition; filters are keyword-only."""

        def body():
            self._no_unnamed(args)
            positions = [self._position_info(p) for p in self._positions.values()]
            return self._filtered(positions, symbol, group, ticket, operator.attrgetter("ticket"))

        return self._call("positions_get", body)

    def positions_total(self):
        """How many positions are open."""
        return self._call("positions_total", lambda: len(self._positions))

    def orders_get(self, *args, symbol=None, group=None, ticket=None):
        """Pending orders: always ``()``, as the fake has no pending orders."""

        def body():
            self._no_unnamed(args)
            return self._filtered((), symbol, group, ticket, operator.attrgetter("ticket"))

        return self._call("orders_get", body)

    def orders_total(self):
        """How many pending orders there are: 0."""
        return self._call("orders_total", lambda: 0)

    def _position_info(self, position):
        symbol = self._symbols[position.symbol]
        return TradePosition(
            ticket=position.ticket, time=position.time_msc // 1000, time_msc=position.time_msc,
            time_update=position.time_update_msc // 1000, time_update_msc=position.time_update_msc,
            type=position.type, magic=position.magic, identifier=position.identifier, reason=position.reason,
            volume=position.volume, price_open=symbol.price(position.price_open),
            sl=symbol.price(position.sl), tp=symbol.price(position.tp),
            price_current=symbol.price(symbol.exit_quote(position.type)), swap=_cents(position.swap),
            profit=self._profit_now(position), symbol=position.symbol, comment=position.comment, external_id="",
        )

    # -- history ----------------------------------------------------------

    def _history(self, items, time_of, date_from, date_to, args, group, ticket, position, ticket_of):
        """History items by ticket, else by position, else in a server-time date range."""
        self._no_unnamed(args)
        for name, value in (("ticket", ticket), ("position", position)):
            if value is not None and not _is_int(value):
                raise _invalid(name)
        if ticket is not None:
            return tuple(item for item in items if ticket_of(item) == ticket)
        if position is not None:
            return tuple(item for item in items if item.position_id == position)
        if date_from is None or date_to is None:
            raise _CallFailed(RES_E_INVALID_PARAMS, "Invalid arguments")
        start, end = _epoch(date_from, "date_from"), _epoch(date_to, "date_to")
        if group is not None and type(group) is not str:
            raise _invalid("group")
        return tuple(
            item for item in items
            if start <= time_of(item) <= end and (group is None or _matches_group(item.symbol, group))
        )

    def history_orders_get(self, date_from=None, date_to=None, *args, group=None, ticket=None, position=None):
        """Filled orders: by ``ticket=``, ``position=`` or a server-time date range."""
        return self._call("history_orders_get", lambda: self._history(
            self._orders, operator.attrgetter("time_setup"), date_from, date_to, args, group, ticket, position,
            operator.attrgetter("ticket"),
        ))

    def history_deals_get(self, date_from=None, date_to=None, *args, group=None, ticket=None, position=None):
        """Deals: by ``ticket=`` (the deal's ORDER), ``position=`` or a server-time date range."""
        return self._call("history_deals_get", lambda: self._history(
            self._visible_deals(), operator.attrgetter("time"), date_from, date_to, args, group, ticket,
            position, operator.attrgetter("order"),
        ))

    def history_orders_total(self, date_from, date_to):
        """How many orders were set up in the date range."""
        return self._call("history_orders_total", lambda: len(self._history(
            self._orders, operator.attrgetter("time_setup"), date_from, date_to, (), None, None, None, None,
        )))

    def history_deals_total(self, date_from, date_to):
        """How many deals were made in the date range."""
        return self._call("history_deals_total", lambda: len(self._history(
            self._visible_deals(), operator.attrgetter("time"), date_from, date_to, (), None, None, None, None,
        )))

    def _visible_deals(self):
        """The deals a history call sees now; each hidden deal's delay runs down by one call."""
        visible = [deal for deal in self._deals if deal.ticket not in self._hidden_deals]
        for ticket in list(self._hidden_deals):
            self._hidden_deals[ticket] -= 1
            if self._hidden_deals[ticket] <= 0:
                del self._hidden_deals[ticket]
        return visible

    # -- money ------------------------------------------------------------

    def _rate(self, currency):
        """One unit of `currency` in the account currency, from the catalogue's quotes."""
        if currency == _ACCOUNT_CURRENCY:
            return 1.0
        direct = self._symbols.get(currency + _ACCOUNT_CURRENCY)
        if direct is not None:
            return direct.price(direct.bid)
        inverse = self._symbols.get(_ACCOUNT_CURRENCY + currency)
        if inverse is not None:
            return 1.0 / inverse.price(inverse.bid)
        raise ValueError(f"no symbol converts {currency} to {_ACCOUNT_CURRENCY}")

    def _to_account(self, symbol, amount, price):
        """`amount` in `symbol`'s profit currency, in account money; a symbol
        quoted against the account currency converts at its own `price`."""
        if symbol.info["currency_profit"] == _ACCOUNT_CURRENCY:
            return amount
        if symbol.info["currency_base"] == _ACCOUNT_CURRENCY:
            return amount / price
        return amount * self._rate(symbol.info["currency_profit"])

    def _profit(self, symbol, side, volume, price_open, price_close):
        """Unrounded profit of `volume` lots of `side` from price_open to price_close."""
        difference = price_close - price_open if side == ORDER_TYPE_BUY else price_open - price_close
        return self._to_account(symbol, difference * symbol.info["trade_contract_size"] * volume, price_close)

    def _profit_now(self, position):
        symbol = self._symbols[position.symbol]
        return _cents(self._profit(
            symbol, position.type, position.volume, symbol.price(position.price_open),
            symbol.price(symbol.exit_quote(position.type)),
        ))

    def _floating(self, position):
        return self._profit_now(position) + position.swap

    def _margin(self, symbol, volume, price):
        """Margin of `volume` lots at `price`, in account money."""
        info = symbol.info
        if info["currency_margin"] == _ACCOUNT_CURRENCY:
            unit = 1.0
        elif info["currency_profit"] == _ACCOUNT_CURRENCY:
            unit = price
        else:
            unit = self._rate(info["currency_margin"])
        return volume * info["trade_contract_size"] * unit / self._account["leverage"]

    def _position_margin(self, position):
        symbol = self._symbols[position.symbol]
        return self._margin(symbol, position.volume, symbol.price(symbol.quote(position.type)))

    def _used_margin(self):
        return _cents(sum(self._position_margin(p) for p in self._positions.values()))

    def _equity(self):
        return self._balance + sum(self._floating(p) for p in self._positions.values())

    def order_calc_margin(self, action, symbol, volume, price):
        """Margin of a BUY/SELL of `volume` lots at `price`, in account money."""

        def body():
            found = self._calc_arguments(action, symbol, volume=volume, price=price)
            return _cents(self._margin(found, volume, price))

        return self._call("order_calc_margin", body)

    def order_calc_profit(self, action, symbol, volume, price_open, price_close):
        """Profit of a BUY/SELL of `volume` lots between two prices, unrounded, in account money."""

        def body():
            found = self._calc_arguments(action, symbol, volume=volume, price_open=price_open, price_close=price_close)
            return float(self._profit(found, action, volume, price_open, price_close))

        return self._call("order_calc_profit", body)

    def _calc_arguments(self, action, symbol, **numbers):
        if action not in (ORDER_TYPE_BUY, ORDER_TYPE_SELL) or not _is_int(action):
            raise _invalid("action")
        found = self._symbol(symbol)
        for name, value in numbers.items():
            if type(value) not in (int, float):
                raise _invalid(name)
        return found

    # -- trading: requests ------------------------------------------------

    @staticmethod
    def _parse_request(request):
        """The request with every field present, or -2 for a bad one."""
        if type(request) is not dict:
            raise _invalid("request")
        for key, value in request.items():
            kind = _REQUEST_FIELDS.get(key)
            if kind is None or type(value) is not kind:
                raise _invalid(key)
        comment = request.get("comment", "")
        if len(comment) > _COMMENT_MAX or _COMMENT_FORBIDDEN & set(comment):
            raise _invalid("comment")
        return {name: request.get(name, kind()) for name, kind in _REQUEST_FIELDS.items()}

    def order_check(self, request):
        """Check a request without sending it: OrderCheckResult, retcode 0 when it would pass."""

        def body():
            parsed = self._parse_request(request)
            retcode, plan = self._validate(parsed)
            return self._check_result(retcode, plan, parsed)

        return self._call("order_check", body)

    def order_send(self, request):
        """Send a trade request: OrderSendResult, or None on a local or IPC error."""
        return self._call("order_send", lambda: self._send(self._parse_request(request)))

    def _send(self, request):
        if self._tradeapi_disabled:
            raise _CallFailed(RES_E_AUTO_TRADING_DISABLED, "Auto-Trading using Python API disabled in Terminal")
        if request["type_filling"] in self._send_refuses.get(request["symbol"], ()):
            return self._send_result(request, TRADE_RETCODE_INVALID_FILL)
        if self._partial and request["action"] == TRADE_ACTION_DEAL:
            filled = min(self._partial.popleft(), request["volume"])
            retcode, *rest = self._trade(dict(request, volume=filled))
            if retcode == TRADE_RETCODE_DONE and filled < request["volume"] - _VOLUME_EPS:
                retcode = TRADE_RETCODE_DONE_PARTIAL
            return self._send_result(request, retcode, *rest)
        if self._queue:
            retcode, fill = self._queue.popleft()
            if fill:
                self._trade(request)
            if retcode is None:
                raise _CallFailed(RES_E_INTERNAL_FAIL_TIMEOUT, "IPC timeout")
            return self._send_result(request, retcode)
        return self._send_result(request, *self._trade(request))

    def _trade(self, request):
        """Validate and, when it passes, execute: (retcode, order, deal, volume, price)."""
        retcode, plan = self._validate(request)
        if retcode:
            return (retcode,)
        if request["action"] == TRADE_ACTION_SLTP:
            return self._modify(plan, request)
        if request["action"] == TRADE_ACTION_CLOSE_BY:
            return self._close_by(*plan)
        return self._deal(plan, request)

    def _send_result(self, request, retcode, order=0, deal=0, volume=0.0, price=0.0):
        symbol = self._symbols.get(request["symbol"])
        bid, ask = (symbol.price(symbol.bid), symbol.price(symbol.ask)) if symbol else (0.0, 0.0)
        self._next_request += 1
        return OrderSendResult(
            retcode=retcode, deal=deal, order=order, volume=volume, price=price, bid=bid, ask=ask,
            comment=_RETCODE_COMMENTS.get(retcode, ""), request_id=self._next_request - 1,
            retcode_external=0, request=TradeRequest(**request),
        )

    def _check_result(self, retcode, plan, request):
        symbol = self._symbols.get(request["symbol"])
        needed = 0.0
        if not retcode and request["action"] == TRADE_ACTION_DEAL and plan.open_volume:
            needed = self._margin(symbol, plan.open_volume, symbol.price(symbol.quote(request["type"])))
        equity = _cents(self._equity())
        margin = self._used_margin() + needed
        return OrderCheckResult(
            retcode=retcode, balance=self._balance, equity=equity,
            profit=_cents(equity - self._balance), margin=_cents(needed), margin_free=_cents(equity - margin),
            margin_level=_cents(equity / margin * 100) if margin else 0.0,
            comment="Done" if not retcode else _RETCODE_COMMENTS[retcode], request=TradeRequest(**request),
        )

    # -- trading: validation (the server's checks, in order) --------------

    def _validate(self, request):
        """(0, plan) when the server would accept `request`, else (retcode, None)."""
        if not self._algo_trading:
            return TRADE_RETCODE_CLIENT_DISABLES_AT, None
        if not self._connected:
            return TRADE_RETCODE_CONNECTION, None
        if not self._account["trade_allowed"]:
            return TRADE_RETCODE_TRADE_DISABLED, None
        if not self._account["trade_expert"]:
            return TRADE_RETCODE_SERVER_DISABLES_AT, None
        symbol = self._symbols.get(request["symbol"])
        check = {
            TRADE_ACTION_DEAL: self._check_deal,
            TRADE_ACTION_SLTP: self._check_sltp,
            TRADE_ACTION_CLOSE_BY: self._check_close_by,
        }.get(request["action"])
        if symbol is None or check is None:
            return TRADE_RETCODE_INVALID, None
        if symbol.market_closed:
            return TRADE_RETCODE_MARKET_CLOSED, None
        if symbol.info["trade_mode"] == SYMBOL_TRADE_MODE_DISABLED:
            return TRADE_RETCODE_TRADE_DISABLED, None
        return check(symbol, request)

    def _check_deal(self, symbol, request):
        side, volume = request["type"], request["volume"]
        if side not in (ORDER_TYPE_BUY, ORDER_TYPE_SELL):
            return TRADE_RETCODE_INVALID, None
        if not self._filling_allowed(symbol, request["type_filling"]):
            return TRADE_RETCODE_INVALID_FILL, None
        if not self._volume_valid(symbol, volume):
            return TRADE_RETCODE_INVALID_VOLUME, None
        plan = self._plan(symbol, request)
        if isinstance(plan, int):
            return plan, None
        retcode = (
            self._check_opening(symbol, side, plan)
            or self._check_price(symbol, request)
            or (self._check_stops(symbol, side, request["sl"], request["tp"]) if plan.open_volume else 0)
            or (self._check_frozen(symbol, plan.position) if plan.close_volume else 0)
            or self._check_money(symbol, side, plan)
        )
        return (retcode, None) if retcode else (0, plan)

    @staticmethod
    def _filling_allowed(symbol, filling):
        """FOK needs filling_mode bit 1 (or request/instant execution), IOC bit 2
        (market or exchange execution only), RETURN exchange execution."""
        mode, execution = symbol.info["filling_mode"], symbol.info["trade_exemode"]
        dealer = execution in (SYMBOL_TRADE_EXECUTION_REQUEST, SYMBOL_TRADE_EXECUTION_INSTANT)
        if filling == ORDER_FILLING_FOK:
            return bool(mode & 1) or dealer
        if filling == ORDER_FILLING_IOC:
            return bool(mode & 2) and not dealer
        if filling == ORDER_FILLING_RETURN:
            return execution == SYMBOL_TRADE_EXECUTION_EXCHANGE
        return False

    @staticmethod
    def _volume_valid(symbol, volume):
        info = symbol.info
        steps = volume / info["volume_step"]
        return (
            volume > 0
            and info["volume_min"] - _VOLUME_EPS <= volume <= info["volume_max"] + _VOLUME_EPS
            and abs(steps - round(steps)) < 1e-6
        )

    def _plan(self, symbol, request):
        """What the deal would do to the positions, or a retcode."""
        side, volume, ticket = request["type"], request["volume"], request["position"]
        if self._hedging:
            if not ticket:
                return _Plan(open_volume=volume)
            position = self._position_by_ticket(ticket)
            if position is None:
                return TRADE_RETCODE_POSITION_CLOSED
            if position.symbol != symbol.name or position.type == side:
                return TRADE_RETCODE_INVALID
            if self._account["fifo_close"] and any(
                p.symbol == position.symbol and (p.time_msc, p.ticket) < (position.time_msc, position.ticket)
                for p in self._positions.values()
            ):
                return TRADE_RETCODE_FIFO_CLOSE
            plan = _Plan(position, close_volume=volume)
        else:
            position = self._netting_position(symbol.name)
            if ticket and (position is None or position.ticket != ticket):
                return TRADE_RETCODE_POSITION_CLOSED
            if position is None or position.type == side:
                return _Plan(position, open_volume=volume)
            closing = min(volume, position.volume)
            if ticket and volume > position.volume + _VOLUME_EPS:
                return TRADE_RETCODE_INVALID_CLOSE_VOLUME
            plan = _Plan(position, close_volume=closing, open_volume=_lots(volume - closing))
        left = position.volume - plan.close_volume
        too_little_left = not plan.open_volume and _VOLUME_EPS < left < symbol.info["volume_min"] - _VOLUME_EPS
        if left < -_VOLUME_EPS or too_little_left:
            return TRADE_RETCODE_INVALID_CLOSE_VOLUME
        return plan

    @staticmethod
    def _check_opening(symbol, side, plan):
        """The symbol's trade mode against the opening part of a deal."""
        if not plan.open_volume:
            return 0
        mode = symbol.info["trade_mode"]
        if mode == SYMBOL_TRADE_MODE_CLOSEONLY:
            return TRADE_RETCODE_CLOSE_ONLY
        if mode == SYMBOL_TRADE_MODE_LONGONLY and side == ORDER_TYPE_SELL:
            return TRADE_RETCODE_LONG_ONLY
        if mode == SYMBOL_TRADE_MODE_SHORTONLY and side == ORDER_TYPE_BUY:
            return TRADE_RETCODE_SHORT_ONLY
        return 0

    @staticmethod
    def _check_price(symbol, request):
        """10015 for a price off the tick grid (or missing under dealer
        execution), 10004 for one further than `deviation` points from the market."""
        price = request["price"]
        if not all(symbol.on_grid(value) for value in (price, request["sl"], request["tp"])):
            return TRADE_RETCODE_INVALID_PRICE
        if not price:
            dealer = symbol.info["trade_exemode"] in (SYMBOL_TRADE_EXECUTION_REQUEST, SYMBOL_TRADE_EXECUTION_INSTANT)
            return TRADE_RETCODE_INVALID_PRICE if dealer else 0
        if abs(symbol.points(price) - symbol.quote(request["type"])) > request["deviation"]:
            return TRADE_RETCODE_REQUOTE
        return 0

    @staticmethod
    def _check_stops(symbol, side, sl, tp):
        """10016 unless SL and TP are on the right side of the closing price and
        at least trade_stops_level points from it (MQL5 article 2555)."""
        level = symbol.info["trade_stops_level"]
        reference = symbol.exit_quote(side)
        sign = 1 if side == ORDER_TYPE_BUY else -1
        for stop, beyond in ((sl, -sign), (tp, sign)):
            if stop:
                distance = (symbol.points(stop) - reference) * beyond
                if distance <= 0 or distance < level:
                    return TRADE_RETCODE_INVALID_STOPS
        return 0

    @staticmethod
    def _check_frozen(symbol, position):
        """10029 when the price is within trade_freeze_level points of the position's SL or TP."""
        level = symbol.info["trade_freeze_level"]
        price = symbol.exit_quote(position.type)
        if level and any(stop and abs(price - stop) < level for stop in (position.sl, position.tp)):
            return TRADE_RETCODE_FROZEN
        return 0

    def _check_money(self, symbol, side, plan):
        if not plan.open_volume:
            return 0
        price = symbol.price(symbol.quote(side))
        released = self._margin(symbol, plan.close_volume, price)
        free = self._equity() - self._used_margin() + released
        return TRADE_RETCODE_NO_MONEY if self._margin(symbol, plan.open_volume, price) > free else 0

    def _check_sltp(self, symbol, request):
        if request["position"]:
            position = self._position_by_ticket(request["position"])
        else:  # a netting account may name the symbol alone
            position = None if self._hedging else self._netting_position(symbol.name)
        if position is None:
            return TRADE_RETCODE_POSITION_CLOSED, None
        if position.symbol != symbol.name:
            return TRADE_RETCODE_INVALID, None
        sl, tp = request["sl"], request["tp"]
        if not (symbol.on_grid(sl) and symbol.on_grid(tp)):
            return TRADE_RETCODE_INVALID_PRICE, None
        if (symbol.points(sl), symbol.points(tp)) == (position.sl, position.tp):
            return TRADE_RETCODE_NO_CHANGES, None
        retcode = self._check_frozen(symbol, position) or self._check_stops(symbol, position.type, sl, tp)
        return (retcode, None) if retcode else (0, position)

    def _check_close_by(self, symbol, request):
        if not self._hedging:
            return TRADE_RETCODE_INVALID, None
        position = self._position_by_ticket(request["position"])
        opposite = self._position_by_ticket(request["position_by"])
        if position is None or opposite is None:
            return TRADE_RETCODE_POSITION_CLOSED, None
        if position.symbol != symbol.name or opposite.symbol != symbol.name or position.type == opposite.type:
            return TRADE_RETCODE_INVALID, None
        return 0, (position, opposite)

    @property
    def _hedging(self):
        return self._account["margin_mode"] == ACCOUNT_MARGIN_MODE_RETAIL_HEDGING

    def _position_by_ticket(self, ticket):
        return next((p for p in self._positions.values() if p.ticket == ticket), None)

    def _netting_position(self, name):
        """The one position a netting account holds on symbol `name`, or None."""
        return next((p for p in self._positions.values() if p.symbol == name), None)

    # -- trading: execution -----------------------------------------------

    def _new_order_ticket(self):
        self._next_order += 1
        return self._next_order - 1

    def _deal(self, plan, request):
        """Execute a validated market deal at the current price."""
        symbol = self._symbols[request["symbol"]]
        side, volume = request["type"], request["volume"]
        price = symbol.quote(side)
        sl, tp = symbol.points(request["sl"]), symbol.points(request["tp"])
        ticket = self._new_order_ticket()
        msc = self._server_msc()
        position = plan.position
        comment = self._stored_comment(request["comment"])
        details = dict(reason=DEAL_REASON_EXPERT, magic=request["magic"], comment=comment)
        if position is None:
            position = _Position(
                ticket=ticket, identifier=ticket, symbol=symbol.name, type=side, volume=volume, price_open=price,
                sl=sl, tp=tp, magic=request["magic"], comment=comment, reason=POSITION_REASON_EXPERT,
                time_msc=msc, time_update_msc=msc,
            )
            self._positions[ticket] = position
            deal = self._record_deal(ticket, symbol.name, side, DEAL_ENTRY_IN, volume, price,
                                     position_id=ticket, **details)
        elif not plan.close_volume:
            total = position.volume + volume
            position.price_open = int(round((position.price_open * position.volume + price * volume) / total))
            position.volume = _lots(total)
            position.time_update_msc = msc
            if sl or tp:
                position.sl, position.tp = sl, tp
            deal = self._record_deal(ticket, symbol.name, side, DEAL_ENTRY_IN, volume, price,
                                     position_id=position.identifier, **details)
        else:
            entry = DEAL_ENTRY_INOUT if plan.open_volume else DEAL_ENTRY_OUT
            deal = self._exit(position, plan.close_volume, price, order=ticket, entry=entry, deal_volume=volume,
                              **details)
            if plan.open_volume:
                position.ticket, position.type, position.volume = ticket, side, plan.open_volume
                position.price_open, position.sl, position.tp = price, sl, tp
                position.time_msc = position.time_update_msc = msc
                self._positions[position.identifier] = position
        self._record_order(ticket, symbol, side, volume, price, position_id=position.identifier,
                           filling=request["type_filling"], sl=sl, tp=tp, **details)
        return TRADE_RETCODE_DONE, ticket, deal, volume, symbol.price(price)

    def _stored_comment(self, comment):
        """A request's comment as the server stores it: cut to `comment_limit`."""
        return comment if self.comment_limit is None else comment[: self.comment_limit]

    def _modify(self, position, request):
        """Execute a validated SL/TP change."""
        symbol = self._symbols[position.symbol]
        position.sl, position.tp = symbol.points(request["sl"]), symbol.points(request["tp"])
        position.time_update_msc = self._server_msc()
        return (TRADE_RETCODE_DONE,)

    def _close_by(self, position, opposite):
        """Execute a validated close-by: both positions close at `opposite`'s open price."""
        symbol = self._symbols[position.symbol]
        volume = min(position.volume, opposite.volume)
        ticket = self._new_order_ticket()
        price = opposite.price_open
        self._record_order(ticket, symbol, ORDER_TYPE_CLOSE_BY, volume, price, position_id=position.identifier,
                           reason=ORDER_REASON_EXPERT, magic=0, comment="", position_by=opposite.identifier)
        details = dict(order=ticket, reason=DEAL_REASON_EXPERT, magic=0, comment="", entry=DEAL_ENTRY_OUT_BY)
        deal = self._exit(position, volume, price, **details)
        self._exit(opposite, volume, price, **details)
        return TRADE_RETCODE_DONE, ticket, deal, volume, symbol.price(price)

    def _exit(self, position, volume, price, *, order, reason, magic, comment, entry=DEAL_ENTRY_OUT,
              deal_volume=None):
        """Book the deal closing `volume` of `position` at `price` (points); the
        position shrinks and leaves the book when nothing is left. Its deal ticket."""
        symbol = self._symbols[position.symbol]
        profit = _cents(self._profit(symbol, position.type, volume, symbol.price(position.price_open),
                                     symbol.price(price)))
        swap = _cents(position.swap * volume / position.volume)
        position.swap -= swap
        deal = self._record_deal(
            order, symbol.name, _opposite(position.type), entry, deal_volume or volume, price,
            position_id=position.identifier, reason=reason, magic=magic, comment=comment, profit=profit, swap=swap,
        )
        position.volume = _lots(position.volume - volume)
        position.time_update_msc = self._server_msc()
        if position.volume < _VOLUME_EPS:
            del self._positions[position.identifier]
        return deal

    def _close_at(self, position, price, reason, comment, magic=0):
        """Close all of `position` at `price` (points) for a server-side `reason`."""
        symbol = self._symbols[position.symbol]
        ticket = self._new_order_ticket()
        side = _opposite(position.type)
        self._record_order(ticket, symbol, side, position.volume, price, position_id=position.identifier,
                           reason=reason, magic=magic, comment=comment)
        return self._exit(position, position.volume, price, order=ticket, reason=reason, magic=magic, comment=comment)

    def _record_order(self, ticket, symbol, side, volume, price, *, position_id, reason, magic, comment,
                      filling=ORDER_FILLING_FOK, sl=0, tp=0, position_by=0):
        msc = self._server_msc()
        self._orders.append(TradeOrder(
            ticket=ticket, time_setup=msc // 1000, time_setup_msc=msc, time_done=msc // 1000, time_done_msc=msc,
            time_expiration=0, type=side, type_time=ORDER_TIME_GTC, type_filling=filling,
            state=ORDER_STATE_FILLED, magic=magic, position_id=position_id, position_by_id=position_by,
            reason=reason, volume_initial=volume, volume_current=0.0, price_open=symbol.price(price),
            sl=symbol.price(sl), tp=symbol.price(tp), price_current=symbol.price(price), price_stoplimit=0.0,
            symbol=symbol.name, comment=comment, external_id="",
        ))

    def _record_deal(self, order, symbol, side, entry, volume, price, *, position_id, reason, magic, comment,
                     profit=0.0, swap=0.0, msc=None):
        """Book a deal (a balance deal when `side` is DEAL_TYPE_BALANCE) and its
        money; its ticket. `price` is in points for trade deals."""
        trade = side in (DEAL_TYPE_BUY, DEAL_TYPE_SELL)
        msc = self._server_msc() if msc is None else msc
        commission = _cents(-self.commission_per_lot * volume) if trade else 0.0
        fee = _cents(-self.fee_per_deal) if trade else 0.0
        ticket = self._next_deal
        self._next_deal += 1
        self._deals.append(TradeDeal(
            ticket=ticket, order=order, time=msc // 1000, time_msc=msc, type=side, entry=entry, magic=magic,
            position_id=position_id, reason=reason, volume=volume,
            price=self._symbols[symbol].price(price) if trade else 0.0, commission=commission, swap=swap,
            profit=_cents(profit), fee=fee, symbol=symbol, comment=comment, external_id="",
        ))
        if self._deal_delay:
            self._hidden_deals[ticket] = self._deal_delay
        self._balance = _cents(self._balance + profit + commission + swap + fee)
        return ticket

    # -- test controls: the market ------------------------------------------

    def advance(self, seconds):
        """Move the clock on `seconds` whole seconds. Each second every open
        market's bid takes a random step and SL/TP are checked at that price."""
        steps = self._rng.normal(0.0, 1.0, size=(int(seconds), len(self._symbols)))
        for row in steps:
            self.now += 1
            msc = self._server_msc()
            for symbol, step in zip(self._symbols.values(), row):
                if not symbol.market_closed:
                    symbol.bid = max(symbol.grid, symbol.snap(symbol.bid + int(round(step * symbol.volatility))))
                    self._on_tick(symbol, msc)

    def set_price(self, symbol, bid):
        """Jump `symbol`'s bid to `bid` now (a tick), then check SL/TP."""
        found = self._symbols[symbol]
        found.bid = found.snap(found.points(bid))
        self._on_tick(found, self._server_msc())

    def _on_tick(self, symbol, msc):
        symbol.no_quotes = False
        symbol.tick(msc)
        for position in [p for p in self._positions.values() if p.symbol == symbol.name]:
            self._trigger_stops(symbol, position)

    def _trigger_stops(self, symbol, position):
        """Close `position` at its SL or TP level if this tick reached it."""
        price = symbol.exit_quote(position.type)
        sign = 1 if position.type == ORDER_TYPE_BUY else -1
        if position.sl and (price - position.sl) * sign <= 0:
            self._close_at(position, position.sl, DEAL_REASON_SL, f"[sl {symbol.text(position.sl)}]", position.magic)
        elif position.tp and (price - position.tp) * sign >= 0:
            self._close_at(position, position.tp, DEAL_REASON_TP, f"[tp {symbol.text(position.tp)}]", position.magic)

    def set_trade_mode(self, symbol, mode):
        """Change `symbol`'s trade_mode (SYMBOL_TRADE_MODE_*), as a broker does
        before an expiry or a delisting."""
        self._symbols[symbol].info["trade_mode"] = mode

    def set_stops_level(self, symbol, level):
        """Change `symbol`'s trade_stops_level (points), as brokers widen it around news."""
        self._symbols[symbol].info["trade_stops_level"] = int(level)

    def set_no_quotes(self, symbol):
        """`symbol` has no quote yet (just selected): its tick is all zeros
        until the next price comes."""
        self._symbols[symbol].no_quotes = True

    def rewrite_comment(self, identifier, text):
        """The broker rewrites an open position's comment (some do on a stop's
        move or a partial close); `text` may hold characters no request may."""
        self._positions[identifier].comment = text

    def set_market_closed(self, symbol, closed):
        """Close or reopen `symbol`'s market: while closed its price stands
        still and orders get 10018."""
        self._symbols[symbol].market_closed = closed

    def close_by_hand(self, identifier, reason=DEAL_REASON_CLIENT):
        """Close a whole position at the market as a person would (reason
        CLIENT, MOBILE or WEB); the exit deal's ticket."""
        if reason not in _MANUAL_REASONS:
            raise ValueError(f"a manual close has reason {_MANUAL_REASONS}, not {reason}")
        position = self._positions[identifier]
        symbol = self._symbols[position.symbol]
        return self._close_at(position, symbol.exit_quote(position.type), reason, "")

    def stop_out(self, identifier):
        """Close a whole position at the market as the broker's stop-out does
        (reason SO); the exit deal's ticket."""
        position = self._positions[identifier]
        symbol = self._symbols[position.symbol]
        level = self._account_info().margin_level
        return self._close_at(position, symbol.exit_quote(position.type), DEAL_REASON_SO, f"[so {level:.2f}%]")

    def charge_swap(self, identifier, amount):
        """Add `amount` (negative for a cost) to a position's swap; it is booked
        on the exit deals."""
        self._positions[identifier].swap += amount

    # -- test controls: the terminal --------------------------------------

    def disappear(self):
        """The terminal process ends: every call fails with -10004 until
        `come_back` and a new `initialize`."""
        self._running = False
        self._ipc = False

    def come_back(self):
        """The terminal process runs again (the IPC link still needs `initialize`)."""
        self._running = True

    def set_connected(self, connected):
        """Drop or restore the broker link: while down, ticks stand still and
        orders get 10031. The server keeps trading (SL/TP still trigger)."""
        self._connected = connected
        if connected:
            self._stale_ticks = None
        elif self._stale_ticks is None:
            self._stale_ticks = {name: self._tick(symbol) for name, symbol in self._symbols.items()}

    def set_algo_trading(self, enabled):
        """The Algo Trading button: off makes orders answer 10027."""
        self._algo_trading = enabled

    def set_tradeapi_disabled(self, disabled):
        """The "disable trading via Python API" option: on makes order_send fail with -8."""
        self._tradeapi_disabled = disabled

    # -- test controls: scripted answers ----------------------------------

    def queue_retcode(self, retcode, times=1, fill=False):
        """The next `times` order_send calls answer `retcode`; with `fill` each
        request is still executed by the server (the unknown-outcome case)."""
        self._queue.extend([(retcode, fill)] * times)

    def queue_none(self, fill=False):
        """The next order_send returns None with (-10005, 'IPC timeout'); with
        `fill` the server still executes the request."""
        self._queue.append((None, fill))

    def queue_partial(self, volume, times=1):
        """The next `times` market deals fill only `volume` lots each (the rest
        of the request is cancelled) and answer 10010 DONE_PARTIAL."""
        self._partial.extend([volume] * times)

    def set_send_refuses_filling(self, symbol, *fillings):
        """order_send answers 10030 for these ORDER_FILLING_* modes on `symbol`,
        though order_check passes them."""
        self._send_refuses[symbol] = set(fillings)

    def queue_delay_deals(self, calls):
        """From now on each new deal stays out of history for the next `calls`
        history_deals_get/_total calls; 0 turns the delay off."""
        self._deal_delay = calls


for _name, _value in MT5_CONSTANTS.items():
    setattr(FakeTerminal, _name, _value)

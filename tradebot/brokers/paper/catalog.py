"""
The paper broker's symbols and money: the catalog (specifications as a typical
MT5 broker has them), where each walk starts and how much it moves, and the
rules the paper market and the backtester share: profit (with the one
conversion rule for quote currencies) and margin; the MT5 return codes the
paper broker refuses with.
"""

from decimal import Decimal
from typing import Dict

from tradebot.broker import SELL, SymbolSpec

ACCOUNT_CURRENCY = "USD"


#: Completed M1 bars kept per symbol, and the history made before trading starts.
MAX_BARS = 1000


WARM_UP_BARS = 300


#: Closed positions remembered per account (older ones are in the trades table).
MAX_CLOSED = 500


# MT5 trade server return codes the paper broker uses when it refuses an order.
RETCODE_INVALID = 10013


RETCODE_INVALID_VOLUME = 10014


RETCODE_INVALID_STOPS = 10016


RETCODE_NO_MONEY = 10019


RETCODE_POSITION_CLOSED = 10036


def _spec(name, digits, contract, vmin, vmax, step, stops_level, spread, currency, description):
    return SymbolSpec(
        name=name,
        digits=digits,
        contract_size=Decimal(contract),
        volume_min=Decimal(vmin),
        volume_max=Decimal(vmax),
        volume_step=Decimal(step),
        stops_level=stops_level,
        spread=spread,
        profit_currency=currency,
        description=description,
    )


#: The symbols on offer, with specifications as a typical MT5 broker has them.
CATALOG: Dict[str, SymbolSpec] = {
    "XAUUSD": _spec("XAUUSD", 2, 100, "0.01", "100", "0.01", 10, 20, "USD", "Gold vs US Dollar"),
    "EURUSD": _spec("EURUSD", 5, 100000, "0.01", "100", "0.01", 5, 10, "USD", "Euro vs US Dollar"),
    "GBPUSD": _spec("GBPUSD", 5, 100000, "0.01", "100", "0.01", 5, 14, "USD", "Pound vs US Dollar"),
    "USDJPY": _spec("USDJPY", 3, 100000, "0.01", "100", "0.01", 5, 12, "JPY", "US Dollar vs Yen"),
    "BTCUSD": _spec("BTCUSD", 2, 1, "0.01", "10", "0.01", 100, 1500, "USD", "Bitcoin vs US Dollar"),
}


#: Where each symbol's walk starts and how much it moves: the standard
#: deviation of one simulated second's log return.
_START_PRICE = {"XAUUSD": 2330.0, "EURUSD": 1.085, "GBPUSD": 1.27, "USDJPY": 151.5, "BTCUSD": 65000.0}


_VOLATILITY = {"XAUUSD": 2.8e-05, "EURUSD": 1.0e-05, "GBPUSD": 1.1e-05, "USDJPY": 1.0e-05, "BTCUSD": 8.0e-05}


def profit_in_quote(spec: SymbolSpec, side: str, volume, price_open, price_close) -> Decimal:
    """What `volume` lots of `spec` make from `price_open` to `price_close`,
    in the symbol's profit currency, unrounded: price difference x contract
    size x volume (MT5's rule for forex and CFDs). The paper market and the
    backtester both use it."""
    difference = Decimal(str(price_close)) - Decimal(str(price_open))
    if side == SELL:
        difference = -difference
    return difference * spec.contract_size * Decimal(str(volume))


def profit_in_account(spec: SymbolSpec, side: str, volume, price_open, price_close, rate=None) -> Decimal:
    """What `volume` lots make from `price_open` to `price_close` in the
    account currency (USD), unrounded: the one conversion rule the paper
    market and the backtester share. A USD profit is as it is; the profit of
    a USDxxx symbol (in its quote currency) is converted at `price_close`,
    which is the rate at the moment it closes (for a loss at the stop, the
    stop's price: BUY USDJPY 151.512, stop 150.012, one lot loses 999.92,
    not the 990.10 today's 151.50 would say); any other currency at `rate`
    (dollars per unit now), ValueError without one."""
    raw = profit_in_quote(spec, side, volume, price_open, price_close)
    if spec.profit_currency == ACCOUNT_CURRENCY:
        return raw
    if spec.name == ACCOUNT_CURRENCY + spec.profit_currency:
        return raw / Decimal(str(price_close))
    if rate is None:
        raise ValueError(f"{spec.name}: no rate to convert {spec.profit_currency} to {ACCOUNT_CURRENCY}")
    return raw * Decimal(rate)


def required_margin(spec: SymbolSpec, volume: Decimal, price: Decimal, leverage: Decimal) -> Decimal:
    """Margin in USD for `volume` lots at `price` and `leverage`: the
    position's value in its base currency (USD for XXXUSD, else the quote
    converted) over the leverage. The paper market and the backtester both
    use it."""
    notional = volume * spec.contract_size
    if spec.profit_currency == ACCOUNT_CURRENCY:
        value = notional * price
    else:  # USDJPY and the like: the base currency is USD
        value = notional
    return value / leverage

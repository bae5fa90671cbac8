"""
The paper broker: a simulated market that behaves like an MT5 account.

One `PaperMarket` per server is shared by every account trading on it. Each
symbol's bid follows a seeded random walk, one step per simulated second, and
builds M1 candles; the ask is the bid plus the symbol's spread. Simulated time
runs `speed` times faster than the reactor's clock and is advanced lazily, on
the first call that needs it, so an idle market costs nothing. While it
advances, every open position of every account is checked against each
simulated second: a stop loss or take profit fills, as on a real MT5 server,
at the first price that reached its level (each second's bid is a tick, so
that price may lie a little past the level, or far past it after a jump), and
the account's balance moves by the realised profit, computed the way MT5 does
(price difference x contract size x volume, converted to the account
currency, USD).

Each account has its own `PaperBroker` (balance, open and closed positions).
The market and every account are saved through the store (the
``broker_state`` table) when a position opens or closes and when the server
stops, and loaded when it starts, so open paper positions and paper balances
survive a restart and the market carries on where it stopped.

Like a real broker, the paper broker never tells what it could lose: a fill,
a close or a balance is answered only once the state holding it is saved. A
server killed at any moment (kill -9) restarts on a paper account that has
every position, close and balance its sessions were told of.

URL: ``paper://?seed=7&speed=600&balance=10000&leverage=100`` (all optional).

The package: `catalog` (symbols, profit and margin rules), `walks` (where
prices come from), `market` (the shared market and its stops), `account`
(one paper account, the broker interface), `backend` (the URL, saving).
Their public names are importable from here too.
"""

from tradebot.brokers.paper.account import PaperBroker  # noqa: F401 (importable from here too)
from tradebot.brokers.paper.backend import STATE_KEY, PaperBackend  # noqa: F401 (importable from here too)
from tradebot.brokers.paper.catalog import (  # noqa: F401 (importable from here too)
    ACCOUNT_CURRENCY,
    CATALOG,
    MAX_BARS,
    MAX_CLOSED,
    RETCODE_INVALID,
    RETCODE_INVALID_STOPS,
    RETCODE_INVALID_VOLUME,
    RETCODE_NO_MONEY,
    RETCODE_POSITION_CLOSED,
    WARM_UP_BARS,
    profit_in_account,
    profit_in_quote,
    required_margin,
)
from tradebot.brokers.paper.market import BarReplayMarket, PaperMarket  # noqa: F401 (importable from here too)

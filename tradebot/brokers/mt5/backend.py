"""
The MetaTrader 5 broker: the broker interface over a link to one terminal.

A `MT5Backend` is one terminal logged in to one trading account; each tradebot
account trading through it gets an `MT5Broker`, told apart by its magic number
(``magic`` + the account's id) on every order. What it takes care of, after
``docs/mt5.md`` and the MetaTrader5 facts it cites:

- **Connection.** `initialize` with the terminal path; `login` only when the
  terminal is on another account (re-sending credentials can drop a session);
  a warning when algo trading is off. A heartbeat reads `terminal_info()`:
  a lost terminal (no answer, IPC errors) is reconnected with back-off, a lost
  broker link (``connected`` false) pauses new orders; watchers hear once when
  the broker goes away and once when it is back.
- **Orders.** The symbol selected before use; volume checked against
  min/max/step; SL and TP rounded to the digits and pushed out to the stops
  level; a filling mode from the symbol's flags, proven with `order_check`
  and kept for the symbol; requotes retried with a fresh price, too many
  requests backed off; every other refusal is an `OrderRefused` with a
  readable reason. After a timeout, a lost connection or a ``None`` result
  the order is looked up by magic and comment, never sent again. A close is
  an opposite deal naming the position, sent the same way and never resent.
- **Positions** by ``identifier`` (a netting account changes the ticket on a
  reversal), on hedging and netting accounts; a closed position's result is
  the sum of profit, commission, swap and fee over all its deals, its close
  price, time and cause (SL, TP, stop out, by hand) from the exit deal.
- **Time.** The terminal's times are the broker server's wall clock; the
  offset is measured from fresh ticks and every time leaves here in UTC.
"""

import sys
import zlib
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, task
from twisted.logger import Logger

from tradebot.broker import BrokerBackend, BrokerURL, SymbolSpec
from tradebot.brokers.mt5.account import MT5Broker
from tradebot.brokers.mt5.connection import ConnectionPart
from tradebot.brokers.mt5.marketdata import MarketDataPart
from tradebot.brokers.mt5.orders import OrdersPart
from tradebot.brokers.mt5.positions import PositionsPart
from tradebot.brokers.mt5.settings import DEFAULT_MAGIC, settings_from_url, terminal_identity


class MT5Backend(ConnectionPart, MarketDataPart, PositionsPart, OrdersPart, BrokerBackend):
    """One MetaTrader 5 terminal reached through `link`.

    `reactor` gives the clock; `password` (the one stored with an account, or
    given later with `use_password`) logs in when a login is needed; without
    one it is read from the environment: ``TRADEBOT_MT5_PASSWORD_<login>``,
    else ``TRADEBOT_MT5_PASSWORD``.
    """

    _log = Logger()

    #: What terminal this is, however its URL is written.
    identity = ""
    #: The name it is given in its URL (``name=``), if any.
    given_name: Optional[str] = None
    _name: Optional[str] = None
    #: The server's `tradebot.server.metrics.Metrics`, when it keeps them.
    metrics = None

    def __init__(
        self,
        link,
        reactor,
        url: str = "mt5://",
        path: Optional[str] = None,
        login: Optional[int] = None,
        server: Optional[str] = None,
        password: Optional[str] = None,
        deviation: int = 20,
        magic: int = DEFAULT_MAGIC,
        init_timeout_ms: int = 60000,
        heartbeat: float = 5.0,
        max_backoff: float = 60.0,
    ):
        self.link = link
        self.reactor = reactor
        self.url = url
        self.path = path
        self.login = login
        self.server = server
        self._password = password
        self.deviation = deviation
        self.magic = magic
        self.init_timeout_ms = init_timeout_ms
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        #: Server time minus UTC, in seconds, once measured.
        self.offset: Optional[float] = None
        self.hedging = True
        self.terminal_up = False
        #: Why the terminal, though it answers, cannot trade now; None if it can.
        self.trading_problem: Optional[str] = "connecting to the terminal"
        self.down_reason = "connecting to the terminal"
        self._generation = None  # the link's worker that was initialised
        self._watchers: List[Callable[[bool, str], None]] = []
        self._symbols: Dict[str, Tuple[SymbolSpec, dict, float]] = {}  # spec, info, read at
        self._filling: Dict[str, int] = {}
        self._refused_fillings: Dict[str, set] = {}  # symbol -> modes order_send refused (10030)
        self._last_ticks: Dict[str, Tuple[int, float]] = {}  # symbol -> (tick time_msc, read at)
        #: True once the offset came from a fresh time (a moving tick, a fill)
        self.offset_sure = False
        self._initialised_before = False
        self._brokers: Dict[str, MT5Broker] = {}
        self._backoff = 1.0
        self._reconnect_call = None
        self._connecting: Optional[defer.Deferred] = None
        self._heartbeat_loop = task.LoopingCall(self._beat)
        self._heartbeat_loop.clock = reactor
        self._stopped = False
        self.first_attempt: Optional[defer.Deferred] = None
        # what watchers last heard: None until the first attempt is over
        self._announced: Optional[bool] = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True while orders can be sent: the terminal answers, is connected to
        the broker, and lets programs trade."""
        return self.terminal_up and self.trading_problem is None

    @property
    def settled(self) -> bool:
        """False until the first connection attempt is over: not available
        yet, but not lost either."""
        return self._announced is not None

    def watch(self, callback: Callable[[bool, str], None]) -> None:
        """Call ``callback(available, reason)`` when the first connection
        attempt is over, and then each time availability changes."""
        self._watchers.append(callback)

    def unwatch(self, callback) -> None:
        """Stop calling `callback`."""
        if callback in self._watchers:
            self._watchers.remove(callback)

    def start(self):
        """Deferred, fired at once: the terminal is connected to in the
        background (`first_attempt` fires when the first try is over) and
        retried with back-off, so the server starts whatever the terminal does."""
        self._heartbeat_loop.start(self.heartbeat, now=False).addErrback(
            lambda f: self._log.failure("mt5 heartbeat stopped", f)
        )
        self.first_attempt = self._connect_once()
        return defer.succeed(None)

    def stop(self):
        """Deferred: heartbeat and reconnection stopped, the link closed."""
        self._stopped = True
        if self._heartbeat_loop.running:
            self._heartbeat_loop.stop()
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        return self.link.stop()

    @property
    def name(self) -> str:
        """What logs, /health and /metrics call this terminal: its URL's
        ``name=``, else the opaque name `tradebot.trading.backends.Backends` gives it
        (``mt5-`` and 8 hex digits), never its login, server or path."""
        return self.given_name or self._name or "mt5"

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        if hasattr(self.link, "label"):
            self.link.label = self.name

    def use_password(self, password: str) -> bool:
        """Log in with `password` rather than the environment's from the next
        login on; False, keeping the first, if another was given before."""
        if self._password is None:
            self._password = password
        return self._password == password

    def broker_for(self, account_key: str, initial_balance) -> MT5Broker:
        """The account's `MT5Broker`: magic number `magic` + the account id."""
        broker = self._brokers.get(account_key)
        if broker is None:
            offset = int(account_key) if account_key.isdigit() else zlib.crc32(account_key.encode()) % 100000
            broker = self._brokers[account_key] = MT5Broker(self, self.magic + offset)
        return broker


def backend_from_url(url: BrokerURL, reactor=None, link=None) -> MT5Backend:
    """The backend an ``mt5://`` or ``mt5linux://`` URL names (see
    `settings_from_url`), reaching the terminal through `link` if given,
    else through a worker process or the mt5linux bridge."""
    if reactor is None:
        from twisted.internet import reactor
    settings = settings_from_url(url)
    if link is None:
        from tradebot.brokers.mt5.links import RpycLink, WorkerLink

        if settings["scheme"] == "mt5linux":
            link = RpycLink(reactor, settings["host"], settings["port"], call_timeout=settings["call_timeout"])
        else:
            link = WorkerLink(reactor, python=settings["python"] or sys.executable, call_timeout=settings["call_timeout"])
    backend = MT5Backend(
        link,
        reactor,
        url=settings["url"],
        path=settings["path"],
        login=settings["login"],
        server=settings["server"],
        deviation=settings["deviation"],
        magic=settings["magic"],
        init_timeout_ms=settings["init_timeout_ms"],
        heartbeat=settings["heartbeat"],
    )
    backend.given_name = settings["name"]
    backend.identity = terminal_identity(settings)
    return backend



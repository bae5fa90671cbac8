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

import os
import re
import sys
import time
import zlib
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from twisted.internet import defer, task
from twisted.logger import Logger

from tradebot.broker import (
    BUY,
    SELL,
    Broker,
    BrokerBackend,
    BrokerError,
    BrokerUnavailable,
    BrokerURL,
    Candles,
    ClosedPosition,
    OrderRefused,
    OrderRequest,
    Position,
    SymbolSpec,
    Tick,
    UnknownSymbol,
    to_cents,
)
from tradebot.brokers.mt5 import codes
from tradebot.brokers.mt5.links import LinkFailed

#: Where the password comes from: never the URL, never a log line.
PASSWORD_ENV = "TRADEBOT_MT5_PASSWORD"
DEFAULT_MAGIC = 234000
#: How far back order history is searched for an order to reconcile.
HISTORY_DAYS = 30
#: How far from a whole half hour a fresh time may be for the server-time
#: offset to be measured from it: further means the time is not fresh.
OFFSET_TOLERANCE = 120
#: A tick is fresh when its time moved since a read at most this long before:
#: it came between the two reads. A tick that did not move may be hours old
#: (a session break, a weekend) and tells nothing about the server's clock.
FRESH_WINDOW = 120
#: While the offset is not proven by a fresh time, order history is searched
#: this much further back than the trade's own time.
UNSURE_MARGIN = 6 * 3600
#: Attempts at an order that meets requotes or too-many-requests.
ORDER_ATTEMPTS = 4
#: Deals a close may take to close a position filled only in part.
CLOSE_DEALS = 5
#: Seconds a symbol's settings are kept before they are read again (brokers
#: widen the stops level around news, make a symbol close-only before expiry).
SYMBOL_MAX_AGE = 300
#: The comment a close is sent with: the position's own may have been
#: rewritten by the broker (``[sl 1.0850]``), which a request may not carry.
CLOSE_COMMENT = "tb-close"


class OutcomeUnknown(BrokerUnavailable):
    """An order's answer was lost and the order was not found (yet); the
    session looks it up again later. It is never resent."""


class _Lost(Exception):
    """A deal's outcome is unknown: its answer was lost, or the trade server
    said it may have gone through. `why` says which."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class TerminalError(BrokerError):
    """An API call failed and ``last_error()`` said why."""

    def __init__(self, call: str, code: Optional[int], message: str):
        super().__init__(f"{call}: {message} ({code})")
        self.call = call
        self.code = code
        self.message = message


def _decimal(value) -> Decimal:
    return Decimal(repr(float(value)))


class MT5Broker(Broker):
    """One tradebot account's view of the terminal's trading account: its
    orders and positions are the ones carrying its magic number."""

    def __init__(self, backend: "MT5Backend", magic: int):
        self.backend = backend
        self.magic = magic

    @property
    def available(self) -> bool:
        """True while orders can be sent (terminal and broker link up)."""
        return self.backend.available

    @property
    def settled(self) -> bool:
        """False while the first connection to the terminal is under way."""
        return self.backend.settled

    @property
    def unavailable_reason(self) -> str:
        """Why orders cannot be sent now, while `available` is False."""
        return self.backend.down_reason

    def watch(self, callback) -> None:
        """Hear of the terminal's availability changes."""
        self.backend.watch(callback)

    def unwatch(self, callback) -> None:
        """Stop hearing of them."""
        self.backend.unwatch(callback)

    def balance(self):
        """Deferred[Decimal]: the terminal account's balance, to cents."""
        return defer.ensureDeferred(self.backend.balance())

    def equity(self):
        """Deferred[Decimal]: the terminal account's equity (``account_info``),
        every position on the account counted, to cents."""
        return defer.ensureDeferred(self.backend.equity())

    def symbol(self, name):
        """Deferred[SymbolSpec] of a symbol, selected in Market Watch."""
        return defer.ensureDeferred(self.backend.spec(name))

    def tick(self, name):
        """Deferred[Tick]: the latest quote, its time in UTC."""
        return defer.ensureDeferred(self.backend.tick(name))

    def candles(self, name, count):
        """Deferred[Candles]: the last `count` completed M1 bars."""
        return defer.ensureDeferred(self.backend.candles(name, count))

    def calc_profit(self, side, name, volume, price_open, price_close):
        """Deferred[Decimal] from ``order_calc_profit``."""
        return defer.ensureDeferred(self.backend.calc_profit(side, name, volume, price_open, price_close))

    def open_position(self, request: OrderRequest):
        """Deferred[Position]; `OrderRefused` when the broker says no,
        `OutcomeUnknown` when its answer was lost and the order not found."""
        return defer.ensureDeferred(self.backend.open_position(request, self.magic))

    def close_position(self, ticket):
        """Deferred[ClosedPosition] of the position closed at the market;
        `OrderRefused` when the broker says no, `OutcomeUnknown` when its
        answer was lost or the close is not in the history yet."""
        return defer.ensureDeferred(self.backend.close_position(ticket, self.magic))

    def position(self, ticket):
        """Deferred[Optional[Position]] by position identifier."""
        return defer.ensureDeferred(self.backend.position(ticket, self.magic))

    def closed_position(self, ticket):
        """Deferred[Optional[ClosedPosition]]: None while open, or while its
        exit deal has not reached the history yet."""
        return defer.ensureDeferred(self.backend.closed_position(ticket, self.magic))

    def find_by_comment(self, comment, since=None):
        """Deferred[Position | ClosedPosition | None] of this account's order
        with `comment` placed since `since`, from positions, orders in flight,
        then order history."""
        return defer.ensureDeferred(self.backend.find_by_comment(comment, self.magic, since))

    def open_positions(self):
        """Deferred[list of Position]: the positions carrying this magic."""
        return defer.ensureDeferred(self.backend.open_positions(self.magic))


class MT5Backend(BrokerBackend):
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

    def _connect_once(self):
        """Deferred: a connection attempt, shared with one under way."""
        if self._connecting is not None:
            return self._connecting
        attempt = self._connecting = defer.Deferred()

        def _done(result):
            self._connecting = None
            attempt.callback(None)

        defer.ensureDeferred(self._connect()).addBoth(_done)
        return attempt

    async def _connect(self):
        try:
            await self._initialise()
        except Exception as e:
            reason = e.reason if isinstance(e, OrderRefused) else str(e)
            self._log.warn("mt5 {broker}: cannot connect to the terminal: {reason}", broker=self.name, reason=reason)
            self._set_state(False, reason)
            self._schedule_reconnect()
            return
        self._backoff = 1.0

    async def _initialise(self):
        kwargs = {"timeout": self.init_timeout_ms}
        if self.path:
            kwargs["path"] = self.path
        if self._initialised_before:
            # the facts sheet's recovery loop: shut the old link down first (a
            # terminal under mt5linux keeps its module, and its state, between us)
            try:
                await self._raw("shutdown")
            except (TerminalError, BrokerUnavailable, LinkFailed):
                pass
        await self._raw("initialize", **kwargs)
        self._initialised_before = True
        self._generation = getattr(self.link, "generation", None)
        try:
            account = await self._raw("account_info")
        except TerminalError:
            if self.login is None:
                raise
            account = {"login": None}  # not logged in to any account yet
        if self.login is not None and account["login"] != self.login:
            password = self._password or os.environ.get(f"{PASSWORD_ENV}_{self.login}") or os.environ.get(PASSWORD_ENV)
            if not password:
                raise BrokerError(
                    "the terminal is not logged in to the URL's login and no password is set "
                    f"(stored with the account, ${PASSWORD_ENV}_<login> or ${PASSWORD_ENV})"
                )
            login_kwargs = {"password": password, "timeout": self.init_timeout_ms}
            if self.server:
                login_kwargs["server"] = self.server
            await self._raw("login", self.login, **login_kwargs)
            account = await self._raw("account_info")
        terminal = await self._raw("terminal_info")
        self.hedging = account["margin_mode"] == codes.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING
        self._symbols.clear()
        self._filling.clear()
        self._refused_fillings.clear()
        self._log.info(
            "mt5 {broker}: connected to its account ({mode} account)",
            broker=self.name,
            mode="hedging" if self.hedging else "netting",
        )
        if not account.get("trade_expert", True):
            self._log.warn("mt5 {broker}: the broker does not allow expert trading on this account", broker=self.name)
        self._set_state(True, _trading_problem(terminal))

    def _set_state(self, terminal_up: bool, problem: Optional[str]) -> None:
        """Record the terminal's state; watchers hear when `available`
        changes (and once when the first attempt is over)."""
        self.terminal_up = terminal_up
        self.trading_problem = None if problem is None or not terminal_up else problem
        reason = problem or ""
        if not self.available:
            self.down_reason = reason
        if self._announced != self.available:
            self._announced = self.available
            if self.available:
                self._log.info("mt5 {broker}: broker available", broker=self.name)
            else:
                self._log.warn("mt5 {broker}: broker unavailable: {reason}", broker=self.name, reason=reason)
            for watcher in list(self._watchers):
                try:
                    watcher(self.available, "" if self.available else reason)
                except Exception:
                    self._log.failure("a broker watcher failed")

    def _lost(self, reason: str) -> None:
        """The terminal stopped answering: reconnect in the background."""
        if self.terminal_up:
            self._set_state(False, reason)
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._stopped or (self._reconnect_call is not None and self._reconnect_call.active()):
            return
        delay, self._backoff = self._backoff, min(self._backoff * 2, self.max_backoff)
        self._reconnect_call = self.reactor.callLater(delay, self._connect_once)

    def _beat(self):
        if not self.terminal_up:
            return None
        return defer.ensureDeferred(self._check_terminal()).addErrback(
            lambda f: self._log.failure("mt5 heartbeat failed", f)
        )

    async def _check_terminal(self):
        generation = self._generation
        try:
            terminal = await self._raw("terminal_info")
        except (BrokerUnavailable, TerminalError) as e:
            self._lost(f"terminal unreachable: {e}")
            return
        if self.terminal_up and generation == self._generation == getattr(self.link, "generation", None):
            self._set_state(True, _trading_problem(terminal))
            if not self.offset_sure:
                await self._learn_offset()

    async def _learn_offset(self) -> None:
        """Read the ticks of a few symbols in use: one that moved since its
        last read tells the server's clock (see `_observe_tick`)."""
        for name in list(self._symbols)[:3]:
            try:
                await self._raw_tick(name)
            except (BrokerError, LinkFailed):
                return
            if self.offset_sure:
                return

    # -- calls -----------------------------------------------------------------

    async def _raw(self, name: str, *args, **kwargs):
        """The value of one API call. Raises `TerminalError` when it failed
        with a reason, `BrokerUnavailable` when the terminal is out of reach
        (and starts reconnecting)."""
        started = time.monotonic()
        try:
            answer = await self.link.call(name, *args, **kwargs)
        except LinkFailed as e:
            self._lost(str(e))
            raise
        finally:
            if self.metrics is not None:
                self.metrics.broker_calls.labels(broker=self.name, call=name).observe(time.monotonic() - started)
        if "raised" in answer:
            raise TerminalError(name, None, answer["raised"])
        error = answer.get("error")
        if error is not None:
            code, message = error
            if code in codes.IPC_ERRORS:
                what = f"{name}: {message} ({code})"
                if name in ("initialize", "terminal_info") or not await self._answers():
                    self._lost(what)
                raise BrokerUnavailable(what)
            if name in codes.LIST_CALLS and code in (codes.RES_S_OK, codes.RES_E_NOT_FOUND):
                return []  # an empty result answered None, as some builds do
            raise TerminalError(name, code, message)
        return answer["value"]

    async def _answers(self) -> bool:
        """Whether the terminal answers now: after one call's IPC error, it
        tells a lost terminal from a call that alone went wrong."""
        try:
            answer = await self.link.call("terminal_info")
        except LinkFailed:
            return False
        return "error" not in answer and "raised" not in answer

    async def _call(self, name: str, *args, **kwargs):
        """`_raw` for a session's call: fails at once while the terminal is
        out of reach."""
        if self.terminal_up and getattr(self.link, "generation", None) != self._generation:
            self._lost("the broker worker was restarted")
        if not self.terminal_up:
            raise BrokerUnavailable(self.down_reason)
        return await self._raw(name, *args, **kwargs)

    # -- market data -----------------------------------------------------------

    async def _symbol(self, name: str) -> Tuple[SymbolSpec, dict]:
        """The symbol's spec and info, read again when older than
        `SYMBOL_MAX_AGE` seconds (or forgotten after a refusal naming them)."""
        known = self._symbols.get(name)
        if known is not None and self.reactor.seconds() - known[2] < SYMBOL_MAX_AGE:
            return known[0], known[1]
        try:
            info = await self._call("symbol_info", name)
        except TerminalError:
            raise UnknownSymbol(f"the broker does not offer {name}")
        if not info.get("visible", False) or not info.get("select", True):
            try:
                await self._call("symbol_select", name, True)
            except TerminalError as e:
                raise UnknownSymbol(f"{name} cannot be selected in Market Watch: {e.message}")
            info = await self._call("symbol_info", name)
        spec = SymbolSpec(
            name=info["name"],
            digits=int(info["digits"]),
            contract_size=_decimal(info["trade_contract_size"]),
            volume_min=_decimal(info["volume_min"]),
            volume_max=_decimal(info["volume_max"]),
            volume_step=_decimal(info["volume_step"]),
            stops_level=int(info["trade_stops_level"]),
            spread=int(info.get("spread", 0)),
            profit_currency=info.get("currency_profit", ""),
            description=info.get("description", ""),
        )
        self._symbols[name] = (spec, info, self.reactor.seconds())
        return spec, info

    def _forget_symbol(self, name: str) -> None:
        """Read the symbol's settings again at its next use."""
        self._symbols.pop(name, None)

    async def spec(self, name: str) -> SymbolSpec:
        """The symbol's `SymbolSpec`, selecting it in Market Watch if needed."""
        return (await self._symbol(name))[0]

    async def _raw_tick(self, name: str) -> dict:
        """The symbol's last tick; `BrokerUnavailable` while it has no quote
        (a zero tick: a symbol just selected, no price come yet)."""
        await self._symbol(name)
        tick = await self._call("symbol_info_tick", name)
        if not tick.get("bid") or not tick.get("ask") or tick["bid"] <= 0 or tick["ask"] <= 0:
            raise BrokerUnavailable(f"{name} has no quote yet")
        self._observe_tick(name, tick)
        return tick

    def _observe_tick(self, name: str, tick: dict) -> None:
        """Measure the server-time offset from `tick` if it is fresh: its time
        moved since this symbol's previous read, at most `FRESH_WINDOW`
        seconds before, so it came between the two. A tick that did not move
        may be hours old (a session break, a weekend: exactly 30, 60, 90
        minutes, which look like an offset) and says nothing."""
        now = self.reactor.seconds()
        tick_msc = int(tick.get("time_msc") or int(tick["time"]) * 1000)
        previous = self._last_ticks.get(name)
        self._last_ticks[name] = (tick_msc, now)
        if previous is not None and tick_msc > previous[0] and now - previous[1] <= FRESH_WINDOW:
            self._measure_offset(tick_msc / 1000.0, now, sure=True)
        elif self.offset is None:
            # nothing better known yet (a restart on a still market): a guess,
            # used until a fresh time proves or replaces it, never over one
            self._measure_offset(tick_msc / 1000.0, now, sure=False)

    def _measure_offset(self, server_time: float, now: float, sure: bool) -> None:
        """Server time minus UTC, in whole half hours, from `server_time`
        seen at `now` (`sure`: known to be fresh then); a time more than
        `OFFSET_TOLERANCE` seconds off a half hour says nothing, and a guess
        never replaces a sure value."""
        if not sure and self.offset_sure:
            return
        difference = server_time - now
        offset = round(difference / 1800.0) * 1800.0
        if abs(difference - offset) <= OFFSET_TOLERANCE:
            if self.offset is not None and offset != self.offset:
                self._log.info("mt5 {broker}: server time offset now {h:+g} h", broker=self.name, h=offset / 3600)
            self.offset = offset
            self.offset_sure = self.offset_sure or sure

    async def _to_utc(self, server_time: float, symbol: str, required: bool = True) -> float:
        """`server_time` in UTC. Until the offset is known (a fresh tick of
        `symbol` is asked for), a time to be stored fails with
        `BrokerUnavailable`; one that is only shown stays in server time."""
        if self.offset is None:
            await self._raw_tick(symbol)
        if self.offset is None:
            if required:
                raise BrokerUnavailable(
                    "the broker's server time is not known yet (no fresh tick: is the market closed?)"
                )
            return server_time
        return server_time - self.offset

    async def tick(self, name: str) -> Tick:
        """The latest quote, prices at the symbol's digits, time in UTC."""
        spec, _ = await self._symbol(name)
        tick = await self._raw_tick(name)
        return Tick(
            symbol=name,
            time=await self._to_utc(float(tick["time"]), name, required=False),
            bid=spec.round_price(tick["bid"]),
            ask=spec.round_price(tick["ask"]),
        )

    async def candles(self, name: str, count: int) -> Candles:
        """The last `count` completed M1 bars (position 0, the bar still
        forming, is left out), times in UTC."""
        await self._symbol(name)
        rates = await self._call("copy_rates_from_pos", name, codes.TIMEFRAME_M1, 1, int(count))
        offset = await self._to_utc(0.0, name, required=False)
        return Candles(
            symbol=name,
            time=np.asarray(rates["time"], dtype=np.float64) + offset,
            open=np.asarray(rates["open"], dtype=np.float64),
            high=np.asarray(rates["high"], dtype=np.float64),
            low=np.asarray(rates["low"], dtype=np.float64),
            close=np.asarray(rates["close"], dtype=np.float64),
        )

    async def calc_profit(self, side, name, volume, price_open, price_close) -> Decimal:
        """``order_calc_profit`` in account money, unrounded."""
        await self._symbol(name)
        value = await self._call(
            "order_calc_profit",
            codes.ORDER_TYPE_BUY if side == BUY else codes.ORDER_TYPE_SELL,
            name,
            float(volume),
            float(price_open),
            float(price_close),
        )
        return _decimal(value)

    async def balance(self) -> Decimal:
        """The trading account's balance, to cents."""
        account = await self._call("account_info")
        return to_cents(account["balance"])

    async def equity(self) -> Decimal:
        """The trading account's equity, every position on it counted, to cents."""
        account = await self._call("account_info")
        return to_cents(account["equity"])

    # -- orders ----------------------------------------------------------------

    async def open_position(self, request: OrderRequest, magic: int) -> Position:
        """Send a market order for `request` (see the module docstring)."""
        if not self.available:
            raise OrderRefused(f"broker unavailable: {self.down_reason}", "unavailable")
        spec, info = await self._symbol(request.symbol)
        _check_trade_mode(info, request.side)
        _check_volume(spec, request.volume)
        if not self.hedging:
            await self._check_netting(request.symbol)
        order_type = codes.ORDER_TYPE_BUY if request.side == BUY else codes.ORDER_TYPE_SELL

        def order(tick: dict, info: dict) -> dict:
            stop_loss, take_profit = _stops_for(spec, info, request, tick)
            return {
                "action": codes.TRADE_ACTION_DEAL,
                "symbol": request.symbol,
                "volume": float(request.volume),
                "type": order_type,
                "price": float(spec.round_price(tick["ask"] if request.side == BUY else tick["bid"])),
                "sl": float(stop_loss),
                "tp": float(take_profit),
                "deviation": int(self.deviation),
                "magic": int(magic),
                "comment": request.comment,
                "type_time": codes.ORDER_TIME_GTC,
            }

        sent_at = self.reactor.seconds()
        try:
            result = await self._send_deal(request.symbol, info, order)
        except _Lost as lost:
            return await self._after_unknown(request, magic, lost.why)
        return await self._filled(request, magic, result, sent_at)

    async def close_position(self, identifier: int, magic: int) -> ClosedPosition:
        """Close this magic's whole open position `identifier` with an
        opposite market deal naming it (``position=``), with the symbol's
        filling mode and requote retries as for an order. The answer is the
        closed position's result from its deals; a lost answer is never
        resent: `OutcomeUnknown`, and `closed_position` finds the close."""
        if not self.available:
            raise OrderRefused(f"broker unavailable: {self.down_reason}", "unavailable")
        raw = await self._open_raw(identifier, magic)
        if raw is None:
            raise OrderRefused(codes.refusal_reason(codes.POSITION_CLOSED), codes.POSITION_CLOSED)
        symbol = raw["symbol"]
        spec, info = await self._symbol(symbol)
        closing_buy = raw["type"] == codes.ORDER_TYPE_BUY
        for _ in range(CLOSE_DEALS):

            def order(tick: dict, info: dict, raw=raw) -> dict:
                return {
                    "action": codes.TRADE_ACTION_DEAL,
                    "symbol": symbol,
                    "volume": float(raw["volume"]),
                    "type": codes.ORDER_TYPE_SELL if closing_buy else codes.ORDER_TYPE_BUY,
                    "position": int(raw["ticket"]),
                    "price": float(spec.round_price(tick["bid"] if closing_buy else tick["ask"])),
                    "deviation": int(self.deviation),
                    "magic": int(magic),
                    "comment": CLOSE_COMMENT,  # never the position's: the broker may have rewritten it
                    "type_time": codes.ORDER_TIME_GTC,
                }

            try:
                await self._send_deal(symbol, info, order)
            except _Lost as lost:
                raise OutcomeUnknown(f"closing position {identifier}: {lost.why}")
            raw = await self._open_raw(identifier, magic)
            if raw is None:
                break  # all of it closed
            # filled in part (10010): close what is left
            self._log.info(
                "mt5 {broker}: position {identifier} closed in part, {volume} lots left; closing the rest",
                broker=self.name, identifier=identifier, volume=raw["volume"],
            )
        else:
            raise OrderRefused(
                f"position {identifier} closed only in part: {raw['volume']} lots left open",
                codes.DONE_PARTIAL,
            )
        closed = await self.closed_position(identifier, magic)
        if closed is None:
            raise OutcomeUnknown(f"position {identifier} closed but its deals are not in the history yet")
        return closed

    async def _send_deal(self, symbol: str, info: dict, order: Callable[[dict, dict], dict]) -> dict:
        """Send the market deal ``order(tick, info)`` makes from a fresh tick
        and the symbol's info, with the symbol's filling mode; the trade
        server's result once it filled. A requote or a moved price is tried
        again with a new price, and "too many requests" after a doubling
        pause, `ORDER_ATTEMPTS` times in all; a filling mode the server
        refuses (10030), though `order_check` passed it, gives way to the
        next (the one the server took is kept); a refusal naming a symbol
        setting (stops level, trade mode, tick grid) is tried once more with
        the settings read again.
        Raises `OrderRefused` when the server refused it (or the terminal
        refused to send it), and `_Lost` when its outcome is unknown (the
        answer was lost, or the server says it may have gone through): never
        sent again then."""
        retcode, comment = None, ""
        attempt = 0
        reread = False
        while attempt < ORDER_ATTEMPTS:
            deal = order(await self._raw_tick(symbol), info)
            deal["type_filling"] = await self._filling_for(symbol, info, deal)
            try:
                result = await self._raw("order_send", deal)
            except TerminalError as e:
                if e.code in codes.NOT_SENT_REASONS:  # refused before it left the terminal
                    raise OrderRefused(f"{codes.NOT_SENT_REASONS[e.code]}: {e.message}", e.code)
                raise _Lost(f"order_send failed: {e}")
            except BrokerUnavailable as e:
                raise _Lost(str(e))
            retcode, comment = result["retcode"], result.get("comment", "")
            if retcode in codes.FILLED:
                self._filling[symbol] = deal["type_filling"]  # what the server took
                return result
            if retcode in codes.OUTCOME_UNKNOWN:
                raise _Lost(codes.refusal_reason(retcode, comment))
            if retcode == codes.INVALID_FILL:
                # a passed order_check promises nothing: the next mode, remembered
                self._filling.pop(symbol, None)
                self._refused_fillings.setdefault(symbol, set()).add(deal["type_filling"])
                continue  # _filling_for raises once no mode is left
            if retcode in codes.SYMBOL_SETTINGS and not reread:
                # a refusal naming a setting: if the broker changed it since it
                # was read, once more with the settings read afresh
                reread = True
                self._forget_symbol(symbol)
                _, fresh = await self._symbol(symbol)
                changed = any(fresh.get(key) != info.get(key) for key in _TRADE_SETTINGS)
                info = fresh
                if changed:
                    continue
            attempt += 1
            if retcode in codes.RETRY_WITH_NEW_PRICE:
                continue
            if retcode == codes.TOO_MANY_REQUESTS:
                await task.deferLater(self.reactor, 2.0 ** (attempt - 1), lambda: None)
                continue
            raise OrderRefused(codes.refusal_reason(retcode, comment), retcode)
        raise OrderRefused(codes.refusal_reason(retcode, comment), retcode)

    async def _check_netting(self, symbol: str) -> None:
        """On a netting account an order joins whatever position the symbol
        has: refuse rather than trade into a position that is not the trade's."""
        held = await self._call("positions_get", symbol=symbol) or []
        if held:
            owner = "a person" if held[0]["magic"] == 0 else f"magic {held[0]['magic']}"
            raise OrderRefused(
                f"netting account: {symbol} already has a position (opened by {owner}); "
                "an order would merge into it",
                "netting",
            )

    async def _filling_for(self, symbol: str, info: dict, order: dict) -> int:
        """The symbol's filling mode: the first its flags allow that
        ``order_check`` accepts, kept once proven."""
        known = self._filling.get(symbol)
        if known is not None:
            return known
        refused = self._refused_fillings.get(symbol, set())
        candidates = [mode for mode in _filling_candidates(info) if mode not in refused]
        for filling in candidates:
            try:
                check = await self._raw("order_check", dict(order, type_filling=filling))
            except TerminalError as e:
                if e.code in codes.NOT_SENT_REASONS:
                    raise OrderRefused(f"{codes.NOT_SENT_REASONS[e.code]}: {e.message}", e.code)
                raise
            if check["retcode"] == 0:
                self._filling[symbol] = filling
                return filling
            if check["retcode"] != codes.INVALID_FILL:
                return filling  # the check objected to something else: let the order say what
        raise OrderRefused(codes.refusal_reason(codes.INVALID_FILL), codes.INVALID_FILL)

    async def _filled(self, request: OrderRequest, magic: int, result: dict, sent_at: float) -> Position:
        order_ticket = result["order"]
        positions = await self._raw("positions_get", ticket=order_ticket) or []
        if positions and self.reactor.seconds() - sent_at <= FRESH_WINDOW:
            # the position opened between sending and now: its time is a fresh one
            opened = positions[0].get("time_msc", 0) / 1000.0 or float(positions[0]["time"])
            self._measure_offset(opened, self.reactor.seconds(), sure=True)
        if not positions:  # netting: the deal joined or reversed a position
            deals = await self._raw("history_deals_get", ticket=order_ticket) or []
            identifier = deals[0]["position_id"] if deals else order_ticket
            positions = [p for p in await self._raw("positions_get", symbol=request.symbol) or [] if p["identifier"] == identifier]
            if not positions:
                closed = await self.closed_position(identifier, magic)
                if closed is not None:
                    raise OutcomeUnknown(f"order {order_ticket} filled and its position closed at once")
                raise OutcomeUnknown(f"order {order_ticket} filled but its position is not visible yet")
        return await self._position(positions[0])

    async def _after_unknown(self, request: OrderRequest, magic: int, why: str) -> Position:
        """The order's answer was lost: find it, or leave it to a later look."""
        self._log.warn(
            "mt5 {broker}: order {comment} has an unknown outcome ({why}); looking it up",
            broker=self.name,
            comment=request.comment,
            why=why,
        )
        try:
            found = await self.find_by_comment(request.comment, magic)
        except BrokerError as e:
            raise OutcomeUnknown(f"{why}; lookup failed: {e}")
        if isinstance(found, Position):
            return found
        if isinstance(found, ClosedPosition):
            raise OutcomeUnknown(f"{why}; the order filled and has closed already")
        raise OutcomeUnknown(f"{why}; not found yet")

    # -- positions -------------------------------------------------------------

    async def _position(self, raw: dict, required: bool = True) -> Position:
        spec, _ = await self._symbol(raw["symbol"])
        opened = raw.get("time_msc", 0) / 1000.0 or float(raw["time"])
        return Position(
            ticket=int(raw["identifier"]),
            symbol=raw["symbol"],
            side=BUY if raw["type"] == codes.ORDER_TYPE_BUY else SELL,
            volume=_decimal(raw["volume"]),
            open_price=spec.round_price(raw["price_open"]),
            stop_loss=spec.round_price(raw["sl"]),
            take_profit=spec.round_price(raw["tp"]),
            current_price=spec.round_price(raw["price_current"]),
            profit=to_cents(_decimal(raw["profit"]) + _decimal(raw.get("swap", 0))),
            opened_at=await self._to_utc(opened, raw["symbol"], required),
            comment=raw.get("comment", ""),
        )

    async def _open_raw(self, identifier: int, magic: int) -> Optional[dict]:
        positions = await self._call("positions_get", ticket=int(identifier)) or []
        mine = [p for p in positions if p["identifier"] == identifier and p["magic"] == magic]
        if mine:
            return mine[0]
        # a netting reversal gives the position a new ticket, same identifier
        positions = await self._call("positions_get") or []
        mine = [p for p in positions if p["identifier"] == identifier and p["magic"] == magic]
        return mine[0] if mine else None

    async def position(self, identifier: int, magic: int) -> Optional[Position]:
        """The open position with this identifier, or None."""
        raw = await self._open_raw(identifier, magic)
        return None if raw is None else await self._position(raw, required=False)

    async def closed_position(self, identifier: int, magic: int) -> Optional[ClosedPosition]:
        """The closed position's result from its deals, or None while it is
        open or its exit deal is not in the history yet."""
        if await self._open_raw(identifier, magic) is not None:
            return None
        deals = await self._call("history_deals_get", position=int(identifier)) or []
        entries = [d for d in deals if d["entry"] == codes.DEAL_ENTRY_IN and d["type"] in (0, 1)]
        exits = [
            d
            for d in deals
            if d["entry"] in (codes.DEAL_ENTRY_OUT, codes.DEAL_ENTRY_OUT_BY, codes.DEAL_ENTRY_INOUT)
            and d["type"] in (0, 1)
        ]
        if not entries or not exits:
            return None
        entries.sort(key=lambda d: (d["time_msc"], d["ticket"]))
        exits.sort(key=lambda d: (d["time_msc"], d["ticket"]))
        first, last = entries[0], exits[-1]
        spec, _ = await self._symbol(first["symbol"])
        result = sum(
            (_decimal(d["profit"]) + _decimal(d["commission"]) + _decimal(d["swap"]) + _decimal(d.get("fee", 0)) for d in deals),
            Decimal(0),
        )
        return ClosedPosition(
            ticket=int(identifier),
            symbol=first["symbol"],
            side=BUY if first["type"] == codes.DEAL_TYPE_BUY else SELL,
            volume=sum((_decimal(d["volume"]) for d in entries), Decimal(0)),
            open_price=spec.round_price(first["price"]),
            close_price=spec.round_price(last["price"]),
            profit=to_cents(result),
            opened_at=await self._to_utc(first["time_msc"] / 1000.0, first["symbol"]),
            closed_at=await self._to_utc(last["time_msc"] / 1000.0, first["symbol"]),
            reason=codes.CLOSE_REASON_BY_DEAL_REASON.get(last["reason"], "other"),
            comment=first.get("comment", ""),
        )

    async def open_positions(self, magic: int) -> List[Position]:
        """Every open position with this magic number, oldest first."""
        positions = [p for p in await self._call("positions_get") or [] if p["magic"] == magic]
        positions.sort(key=lambda p: (p.get("time_msc", 0), p["identifier"]))
        return [await self._position(raw) for raw in positions]

    async def find_by_comment(self, comment: str, magic: int, since: Optional[float] = None):
        """This magic's position or closed position opened by the order with
        `comment` (placed at `since`, UTC, or later, if given), or None if no
        such order is known to the terminal. Fails with `BrokerUnavailable`
        rather than answer None while the answer could still change: the
        broker link is down, or the order is still being processed."""
        if not self.available:
            raise BrokerUnavailable(self.down_reason)
        now = self.reactor.seconds() + (self.offset or 0.0)
        start = now - HISTORY_DAYS * 86400
        if since is not None and self.offset is not None:
            # an older tb-N is another trade's; while the offset is not proven
            # by a fresh time, the window is widened by hours, not seconds
            margin = 60 if self.offset_sure else UNSURE_MARGIN
            start = max(start, since + self.offset - margin)

        def mine(item, time_field):
            return (
                item["magic"] == magic
                and item.get("comment") == comment
                and item.get(time_field + "_msc", 0) / 1000.0 >= start
            )

        for raw in await self._call("positions_get") or []:
            if mine(raw, "time"):
                return await self._position(raw)
        for order in await self._call("orders_get") or []:
            if mine(order, "time_setup"):
                raise BrokerUnavailable(f"order {order['ticket']} ({comment}) is still being processed")
        orders = await self._call("history_orders_get", int(start), int(now + 86400)) or []
        for order in orders:
            if mine(order, "time_setup") and order.get("position_id"):
                identifier = order["position_id"]
                raw = await self._open_raw(identifier, magic)
                if raw is not None:
                    return await self._position(raw)
                closed = await self.closed_position(identifier, magic)
                if closed is None:
                    raise BrokerUnavailable(f"order {order['ticket']} filled but its deals are not in the history yet")
                return closed
        return None


def _trading_problem(terminal: dict) -> Optional[str]:
    """Why a terminal that answers cannot trade now, or None."""
    if not terminal.get("connected", False):
        return "the terminal has no connection to the broker"
    if not terminal.get("trade_allowed", True):
        return codes.refusal_reason(10027)
    if terminal.get("tradeapi_disabled", False):
        return codes.NOT_SENT_REASONS[codes.RES_E_AUTO_TRADING_DISABLED]
    return None


def _check_trade_mode(info: dict, side: str) -> None:
    mode = info.get("trade_mode", 4)
    if mode == codes.SYMBOL_TRADE_MODE_DISABLED:
        raise OrderRefused(codes.refusal_reason(10017), 10017)
    if mode == codes.SYMBOL_TRADE_MODE_CLOSEONLY:
        raise OrderRefused(codes.refusal_reason(10044), 10044)
    if mode == codes.SYMBOL_TRADE_MODE_LONGONLY and side == SELL:
        raise OrderRefused(codes.refusal_reason(10042), 10042)
    if mode == codes.SYMBOL_TRADE_MODE_SHORTONLY and side == BUY:
        raise OrderRefused(codes.refusal_reason(10043), 10043)


def _check_volume(spec: SymbolSpec, volume: Decimal) -> None:
    """Refuse, as the trade server would (10014), a volume outside
    [min, max] or not a whole number of steps: sizing is the plan's job, and
    the broker does not trade a size nobody chose."""
    if not (spec.volume_min <= volume <= spec.volume_max) or volume % spec.volume_step != 0:
        raise OrderRefused(
            f"invalid volume {volume}: {spec.name} trades {spec.volume_min} to {spec.volume_max} "
            f"lots in steps of {spec.volume_step}",
            10014,
        )


def _stops_for(spec: SymbolSpec, info: dict, request: OrderRequest, tick: dict) -> Tuple[Decimal, Decimal]:
    """SL and TP pushed out to one point beyond the stops level from the
    price the position would close at (the price moves between this tick and
    the trade server), then put on the symbol's tick grid, outward (away from
    the price: an index CFD whose tick is 0.25 refuses a stop between ticks,
    10015); stops on the wrong side of that price are refused (10016)."""
    level = max(int(info.get("trade_stops_level", 0)), 0)
    distance = (level + 1) * spec.point if level else Decimal(0)
    tick_size = _decimal(info.get("trade_tick_size") or 0)
    grid = tick_size if tick_size > spec.point else spec.point

    def outward(price, away: int) -> Decimal:
        """`price` on the grid: up when `away` is 1, down when -1."""
        steps = Decimal(price) / grid
        steps = steps.to_integral_value(rounding=ROUND_CEILING if away > 0 else ROUND_FLOOR)
        return spec.round_price(steps * grid)

    if request.side == BUY:
        reference = spec.round_price(tick["bid"])
        wrong = request.stop_loss >= reference or request.take_profit <= reference
        stop_loss = outward(min(request.stop_loss, reference - distance), -1)
        take_profit = outward(max(request.take_profit, reference + distance), 1)
    else:
        reference = spec.round_price(tick["ask"])
        wrong = request.stop_loss <= reference or request.take_profit >= reference
        stop_loss = outward(max(request.stop_loss, reference + distance), 1)
        take_profit = outward(min(request.take_profit, reference - distance), -1)
    if wrong:
        raise OrderRefused(
            f"{codes.refusal_reason(codes.INVALID_STOPS)}: {request.side} with SL {request.stop_loss} "
            f"and TP {request.take_profit} at {reference}",
            codes.INVALID_STOPS,
        )
    return stop_loss, take_profit


#: The symbol settings an order depends on, that a broker may change in the day.
_TRADE_SETTINGS = (
    "trade_stops_level", "trade_freeze_level", "trade_mode", "trade_tick_size", "digits", "volume_min",
    "volume_max", "volume_step", "filling_mode", "trade_exemode",
)


def _filling_candidates(info: dict) -> List[int]:
    """ORDER_FILLING_* modes the symbol's flags allow, most common first."""
    flags = int(info.get("filling_mode", 0))
    candidates = []
    if flags & codes.SYMBOL_FILLING_FOK:
        candidates.append(codes.ORDER_FILLING_FOK)
    if flags & codes.SYMBOL_FILLING_IOC:
        candidates.append(codes.ORDER_FILLING_IOC)
    if info.get("trade_exemode") == codes.SYMBOL_TRADE_EXECUTION_EXCHANGE or not candidates:
        candidates.append(codes.ORDER_FILLING_RETURN)
    return candidates


def _number(params: dict, key: str, kind, default, meaning: str):
    if key not in params:
        return default
    try:
        value = kind(params[key])
    except ValueError:
        raise ValueError(f"mt5 broker: {key} must be {meaning}, not {params[key]!r}")
    if value < 0:
        raise ValueError(f"mt5 broker: {key} must be {meaning}, not {params[key]!r}")
    return value


KNOWN_PARAMS = {
    "path", "login", "server", "deviation", "magic", "timeout", "call_timeout", "heartbeat", "python", "name",
}
#: What a ``name=`` may hold: it shows in logs and metric labels.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def settings_from_url(url: BrokerURL) -> dict:
    """The settings an ``mt5://`` or ``mt5linux://host:port`` URL gives,
    checked; ValueError names what is wrong.

    Parameters: ``path`` (terminal64.exe), ``login``, ``server``,
    ``deviation`` (points, default 20), ``magic`` (default 234000),
    ``timeout`` (initialize/login, seconds), ``call_timeout`` (seconds before a
    silent call counts as hung, default 75), ``heartbeat`` (seconds), ``python``
    (the worker's interpreter, ``mt5://`` only), ``name`` (what logs and
    metrics call the terminal: letters, digits, ``_.-``, up to 40). A ``password`` parameter is
    refused: it is stored with the account, encrypted, or comes from
    ``$TRADEBOT_MT5_PASSWORD``."""
    params = url.params
    if "password" in params:
        raise ValueError(
            "mt5 broker: never put the password in the URL; store it with "
            f"`tradebot account set NAME --broker-password-stdin`, or set ${PASSWORD_ENV}"
        )
    unknown = set(params) - KNOWN_PARAMS
    if unknown:
        raise ValueError(f"mt5 broker: unknown parameter(s) {', '.join(sorted(unknown))}")
    host, port = None, None
    if url.scheme == "mt5linux":
        host, _, port_text = (url.netloc or "127.0.0.1:18812").partition(":")
        if port_text and not port_text.isdigit():
            raise ValueError(f"mt5linux broker: bad port {port_text!r}")
        host, port = host or "127.0.0.1", int(port_text or 18812)
    elif url.netloc:
        raise ValueError("mt5 broker: the terminal is named by ?path=, not by a host")
    name = params.get("name")
    if name is not None and not _NAME.fullmatch(name):
        raise ValueError(f"mt5 broker: name must be 1 to 40 letters, digits, '_', '.' or '-', not {name!r}")
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {
        "name": name,
        "url": f"{url.scheme}://{url.netloc}" + (f"?{query}" if query else ""),
        "scheme": url.scheme,
        "host": host,
        "port": port,
        "python": params.get("python"),
        "call_timeout": _number(params, "call_timeout", float, 75.0, "a number of seconds") or 75.0,
        "path": params.get("path"),
        "login": _number(params, "login", int, None, "an account number"),
        "server": params.get("server"),
        "deviation": _number(params, "deviation", int, 20, "a number of points"),
        "magic": _number(params, "magic", int, DEFAULT_MAGIC, "a whole number"),
        "init_timeout_ms": int(_number(params, "timeout", float, 60.0, "a number of seconds") * 1000),
        "heartbeat": _number(params, "heartbeat", float, 5.0, "a number of seconds") or 5.0,
    }


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


def terminal_identity(settings: dict) -> str:
    """What terminal the URL `settings` (`settings_from_url`) name, however
    the URL is written: its bridge's address, or its path."""
    if settings["scheme"] == "mt5linux":
        return f"mt5linux://{settings['host']}:{settings['port']}"
    return "mt5://" + (settings["path"] or "").replace("/", "\\").lower()

"""
The link to a terminal: connecting (initialize, the account, the login when
needed, after a shutdown when it comes back), the heartbeat, reconnection with
back-off, and each call's answer read (a failure with its reason, an IPC
error as the terminal out of reach, an empty list answered None as empty).
"""

import os
import time
from typing import Optional

from twisted.internet import defer

from tradebot.broker import BrokerError, BrokerUnavailable, OrderRefused
from tradebot.brokers.mt5 import codes
from tradebot.brokers.mt5.errors import TerminalError
from tradebot.brokers.mt5.links import LinkFailed
from tradebot.brokers.mt5.settings import PASSWORD_ENV


def _trading_problem(terminal: dict) -> Optional[str]:
    """Why a terminal that answers cannot trade now, or None."""
    if not terminal.get("connected", False):
        return "the terminal has no connection to the broker"
    if not terminal.get("trade_allowed", True):
        return codes.refusal_reason(10027)
    if terminal.get("tradeapi_disabled", False):
        return codes.NOT_SENT_REASONS[codes.RES_E_AUTO_TRADING_DISABLED]
    return None


class ConnectionPart:
    """The link to a terminal: connecting (initialize, the account, the login when: methods of `MT5Backend`, which holds the state they share."""

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

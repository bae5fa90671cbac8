"""
A terminal's market data: symbols (selected, their settings re-read when old),
ticks (none without a quote), the server clock's offset from fresh times,
candles, profit, balance and equity.
"""

from decimal import Decimal
from typing import Tuple

import numpy as np

from tradebot.broker import BUY, BrokerUnavailable, Candles, SymbolSpec, Tick, UnknownSymbol, to_cents
from tradebot.brokers.mt5 import codes
from tradebot.brokers.mt5.errors import TerminalError, _decimal

#: How far from a whole half hour a fresh time may be for the server-time
#: offset to be measured from it: further means the time is not fresh.
OFFSET_TOLERANCE = 120


#: A tick is fresh when its time moved since a read at most this long before:
#: it came between the two reads. A tick that did not move may be hours old
#: (a session break, a weekend) and tells nothing about the server's clock.
FRESH_WINDOW = 120


#: Seconds a symbol's settings are kept before they are read again (brokers
#: widen the stops level around news, make a symbol close-only before expiry).
SYMBOL_MAX_AGE = 300


class MarketDataPart:
    """A terminal's market data: symbols (selected, their settings re-read when old),: methods of `MT5Backend`, which holds the state they share."""

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

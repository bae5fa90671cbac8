"""
Orders on a terminal: market orders and closes as opposite deals, the deal-sending
loop (requotes, busy servers, refused filling modes, changed symbol settings,
partial closes), stops on the stops level and the tick grid, lost answers
looked up, never resent.
"""

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Callable, List, Tuple

from twisted.internet import task

from tradebot.broker import (
    BUY,
    SELL,
    BrokerError,
    BrokerUnavailable,
    ClosedPosition,
    OrderRefused,
    OrderRequest,
    Position,
    SymbolSpec,
)
from tradebot.brokers.mt5 import codes
from tradebot.brokers.mt5.errors import OutcomeUnknown, TerminalError, _decimal, _Lost
from tradebot.brokers.mt5.marketdata import FRESH_WINDOW

#: Attempts at an order that meets requotes or too-many-requests.
ORDER_ATTEMPTS = 4


#: Deals a close may take to close a position filled only in part.
CLOSE_DEALS = 5


#: The comment a close is sent with: the position's own may have been
#: rewritten by the broker (``[sl 1.0850]``), which a request may not carry.
CLOSE_COMMENT = "tb-close"


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


class OrdersPart:
    """Orders on a terminal: market orders and closes as opposite deals, the deal-sending: methods of `MT5Backend`, which holds the state they share."""

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

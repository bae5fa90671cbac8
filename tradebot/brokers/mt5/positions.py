"""
Positions on a terminal by identifier, closed positions' results from their
deals, the account's open positions, and an order found again by its magic and
comment.
"""

from decimal import Decimal
from typing import List, Optional

from tradebot.broker import BUY, SELL, BrokerUnavailable, ClosedPosition, Position, to_cents
from tradebot.brokers.mt5 import codes
from tradebot.brokers.mt5.errors import _decimal

#: How far back order history is searched for an order to reconcile.
HISTORY_DAYS = 30


#: While the offset is not proven by a fresh time, order history is searched
#: this much further back than the trade's own time.
UNSURE_MARGIN = 6 * 3600


class PositionsPart:
    """Positions on a terminal by identifier, closed positions' results from their: methods of `MT5Backend`, which holds the state they share."""

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

"""
Inbound alerts: TradingView-style webhooks that queue a signal for accounts.

An account subscribes with ``tradebot account set NAME --webhook``: a random
secret, printed once, of which only the hash is stored (the ``webhooks``
table). ``POST /webhook/<secret>`` with ``{"symbol": "EURUSD", "action":
"buy"}`` (and optionally its stops, see `tradebot.signals.signaljson`) queues one
alert for each account subscribed to that secret (the ``alerts`` table).

An alert is taken by the account's next signal check of that symbol, instead
of asking the strategy, and only then: the session's rules still hold (the
check runs only while the session is active and has room for a trade, the
broker is available and the symbol has no live trade). It stays valid for
`ttl` seconds (``--alert-ttl``, 5 minutes by default) and is never traded
after that; a newer alert for the same account and symbol replaces it. Alerts
are stored, so a queued one survives a restart (still within its validity),
and each is taken at most once: it is marked taken in the database before its
trade is placed. An alert whose trade could not even be tried for a passing
reason (the broker away while sizing it, the database refusing the trade's
record, the server stopping) is queued again by `AlertQueue.release`, for the
next check while it is still valid; one that the plan skips, whose stops are
refused or whose order the broker refuses is used up, since trying again
would meet the same answer at a later price.
"""

from decimal import Decimal
from typing import Dict, List, Optional, Tuple

import attrs
import sqlalchemy as sa
from twisted.logger import Logger

from tradebot.signals.signaljson import BadSignal, parse_object, read_signal
from tradebot.signals.strategies import AtrStops, signal_with_stops
from tradebot.store.db import UnknownAccount, thd_account_by_id, thd_account_by_name
from tradebot.store.schema import alerts, webhooks
from tradebot.store.tokens import hash_token, token_matches

#: Alert statuses: waiting for a check; taken by one; replaced by a newer
#: alert for the same account and symbol; expired unused.
QUEUED = "queued"
TAKEN = "taken"
REPLACED = "replaced"
EXPIRED = "expired"

#: Seconds an alert stays valid by default.
DEFAULT_TTL = 300.0
#: Alerts no longer queued are deleted this long after they were received.
KEEP_FOR = 7 * 24 * 3600.0

_STOP_COLUMNS = ("stop_price", "take_price", "stop_distance", "take_distance")


class UnknownWebhook(Exception):
    """No account is subscribed to that secret."""


@attrs.frozen
class Alert:
    """A queued signal for one account and symbol, valid until `expires_at`
    (epoch seconds). `stops` holds the stops it gives, as
    `signal_with_stops` keywords."""

    id: int
    account_id: int
    symbol: str
    side: str
    stops: Dict[str, Decimal]
    received_at: float
    expires_at: float


@attrs.frozen
class Queued:
    """The answer to a webhook call: the alert queued for each account."""

    symbol: str
    side: str
    alerts: Tuple[Alert, ...]
    expires_at: float


def _alert(row) -> Alert:
    stops = {name: getattr(row, name) for name in _STOP_COLUMNS if getattr(row, name) is not None}
    return Alert(row.id, row.account_id, row.symbol, row.side, stops, row.received_at, row.expires_at)


# -- database operations (run through Store.run / SyncStore.run) -------------------


def thd_set_webhook(conn, name: str, secret_hash: str, now: float) -> None:
    """Subscribe the account called `name` to the secret hashing to
    `secret_hash`, replacing any it had; raises `UnknownAccount`."""
    account = thd_account_by_name(conn, name)
    if account is None:
        raise UnknownAccount(f"no account named {name!r}")
    conn.execute(webhooks.delete().where(webhooks.c.account_id == account.id))
    conn.execute(webhooks.insert().values(account_id=account.id, secret_hash=secret_hash, created_at=now))


def thd_clear_webhook(conn, name: str) -> bool:
    """Remove the account's webhook (its queued alerts are dropped); whether
    it had one. Raises `UnknownAccount`."""
    account = thd_account_by_name(conn, name)
    if account is None:
        raise UnknownAccount(f"no account named {name!r}")
    conn.execute(
        alerts.update()
        .where(alerts.c.account_id == account.id, alerts.c.status == QUEUED)
        .values(status=REPLACED)
    )
    return conn.execute(webhooks.delete().where(webhooks.c.account_id == account.id)).rowcount > 0


def thd_has_webhook(conn, account_id: int) -> bool:
    """Whether the account is subscribed to a webhook."""
    return conn.execute(sa.select(webhooks.c.account_id).where(webhooks.c.account_id == account_id)).first() is not None


def thd_subscribers(conn, secret_hash: str) -> List[Tuple[object, str]]:
    """(account, stored hash) of every account subscribed to `secret_hash`."""
    rows = conn.execute(
        sa.select(webhooks.c.account_id, webhooks.c.secret_hash)
        .where(webhooks.c.secret_hash == secret_hash)
        .order_by(webhooks.c.account_id)
    ).all()
    return [(thd_account_by_id(conn, row.account_id), row.secret_hash) for row in rows]


def thd_queue_alerts(conn, account_ids, symbol: str, side: str, stops: dict, now: float, expires_at: float) -> List[Alert]:
    """Queue an alert for each account, replacing the one queued for the same
    account and symbol; the new alerts."""
    queued = []
    for account_id in account_ids:
        conn.execute(
            alerts.update()
            .where(alerts.c.account_id == account_id, alerts.c.symbol == symbol, alerts.c.status == QUEUED)
            .values(status=REPLACED)
        )
        result = conn.execute(
            alerts.insert().values(
                account_id=account_id,
                symbol=symbol,
                side=side,
                status=QUEUED,
                received_at=now,
                expires_at=expires_at,
                **stops,
            )
        )
        queued.append(_alert(conn.execute(sa.select(alerts).where(alerts.c.id == result.inserted_primary_key[0])).one()))
    return queued


def thd_take_alert(conn, alert_id: int, now: float) -> bool:
    """Mark the alert taken if it is still queued and valid at `now`;
    whether it was (so that it is traded at most once)."""
    result = conn.execute(
        alerts.update()
        .where(alerts.c.id == alert_id, alerts.c.status == QUEUED, alerts.c.expires_at > now)
        .values(status=TAKEN, taken_at=now)
    )
    return result.rowcount == 1


def thd_release_alert(conn, alert_id: int, now: float) -> bool:
    """Queue a taken alert again if it is still valid at `now` and no other
    alert waits for its account and symbol; whether it was."""
    row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None or row.status != TAKEN or row.expires_at <= now:
        return False
    newer = conn.execute(
        sa.select(alerts.c.id).where(
            alerts.c.account_id == row.account_id, alerts.c.symbol == row.symbol, alerts.c.status == QUEUED
        )
    ).first()
    if newer is not None:
        return False
    result = conn.execute(
        alerts.update().where(alerts.c.id == alert_id, alerts.c.status == TAKEN).values(status=QUEUED, taken_at=None)
    )
    return result.rowcount == 1


def thd_queued_alerts(conn, now: float) -> List[Alert]:
    """Every alert still queued and valid at `now`; on the way, those past
    their validity are marked expired and old finished ones deleted."""
    conn.execute(
        alerts.update().where(alerts.c.status == QUEUED, alerts.c.expires_at <= now).values(status=EXPIRED)
    )
    conn.execute(alerts.delete().where(alerts.c.status != QUEUED, alerts.c.received_at < now - KEEP_FOR))
    rows = conn.execute(sa.select(alerts).where(alerts.c.status == QUEUED).order_by(alerts.c.id)).all()
    return [_alert(row) for row in rows]


def thd_expire_alert(conn, alert_id: int) -> None:
    """Mark a queued alert expired."""
    conn.execute(alerts.update().where(alerts.c.id == alert_id, alerts.c.status == QUEUED).values(status=EXPIRED))


# -- the queue ------------------------------------------------------------------------


class AlertQueue:
    """The server's alerts: `receive` queues them from a webhook call,
    `signal` gives a session the one waiting for its symbol. The queued ones
    are kept in memory too (loaded by `start`), so a check of a symbol with
    no alert costs no database call."""

    _log = Logger()

    def __init__(self, store, clock, ttl: float = DEFAULT_TTL):
        self._store = store
        self._clock = clock
        self.ttl = ttl
        self._queued: Dict[Tuple[int, str], Alert] = {}
        self._taken: Dict[Tuple[int, str], Alert] = {}  # the last taken, until its trade is tried

    async def start(self) -> None:
        """Load the alerts still queued and valid (after a restart)."""
        for alert in await self._store.run(thd_queued_alerts, self._clock.seconds()):
            self._queued[(alert.account_id, alert.symbol)] = alert
        if self._queued:
            self._log.info("{n} queued alert(s) still valid", n=len(self._queued))

    def pending(self, account_id: int, symbol: str) -> Optional[Alert]:
        """The alert waiting for this account and symbol, if any."""
        return self._queued.get((account_id, symbol))

    async def receive(self, secret: str, body: bytes) -> Queued:
        """Queue the alert in `body` for the accounts subscribed to `secret`
        (`subscribers`, then `queue_for`)."""
        return await self.queue_for(await self.subscribers(secret), body)

    async def subscribers(self, secret: str) -> list:
        """The accounts subscribed to `secret`; `UnknownWebhook` if none is."""
        subscribers = await self._store.run(thd_subscribers, hash_token(secret))
        subscribers = [account for account, stored in subscribers if account is not None and token_matches(secret, stored)]
        if not subscribers:
            raise UnknownWebhook()
        return subscribers

    async def queue_for(self, subscribers: list, body: bytes) -> Queued:
        """Queue the alert in `body` for `subscribers` (accounts). Raises
        `BadSignal` (queuing nothing) for a body that is not an alert, an
        action other than buy or sell, or a symbol one of them does not trade."""
        obj = parse_object(body)
        symbol = obj.get("symbol")
        if not isinstance(symbol, str) or not symbol.strip():
            raise BadSignal('"symbol" is missing: the symbol to trade, e.g. "EURUSD"')
        symbol = symbol.strip()
        order = read_signal(obj, also=("symbol",))
        if order.side is None:
            raise BadSignal('an alert\'s "action" is "buy" or "sell"')
        strangers = [a for a in subscribers if symbol not in a.symbols]
        if strangers:
            traded = sorted({s for a in strangers for s in a.symbols})
            raise BadSignal(f"{_short(symbol)} is not traded by this webhook's account (it trades {', '.join(traded)})")
        now = self._clock.seconds()
        expires_at = now + self.ttl
        queued = await self._store.run(
            thd_queue_alerts, [a.id for a in subscribers], symbol, order.side, order.stops, now, expires_at
        )
        for alert in queued:
            self._queued[(alert.account_id, alert.symbol)] = alert
            self._log.info(
                "alert queued: {side} {symbol} for account {name} (alert {alert_id}, valid {ttl:g} s)",
                side=alert.side,
                symbol=symbol,
                name=next(a.name for a in subscribers if a.id == alert.account_id),
                alert_id=alert.id,
                ttl=self.ttl,
            )
        return Queued(symbol, order.side, tuple(queued), expires_at)

    async def signal(self, account_id: int, symbol: str, spec, market, broker, strategy):
        """The signal of the alert waiting for this account and symbol, marked
        taken; None if there is none (or it expired, or was replaced). Stops
        the alert does not give come from the strategy's stops helper, on
        the market's candles."""
        key = (account_id, symbol)
        alert = self._queued.get(key)
        if alert is None:
            return None
        if self._clock.seconds() >= alert.expires_at:
            self._forget(key, alert)
            self._log.info("alert {alert_id} ({side} {symbol}) expired unused", alert_id=alert.id, side=alert.side, symbol=symbol)
            await self._store.run(thd_expire_alert, alert.id)
            return None
        stops = getattr(strategy, "stops", None) or AtrStops()
        candles = None
        if len(alert.stops) < 2:
            candles = await market.candles(broker, symbol, stops.candles_needed)
        signal = signal_with_stops(alert.side, stops, candles, spec, **alert.stops)
        if signal is None:
            self._log.warn(
                "alert {alert_id} ({side} {symbol}) waits: the stops helper has no stops yet",
                alert_id=alert.id, side=alert.side, symbol=symbol,
            )
            return None
        if self._queued.get(key) is not alert:  # replaced meanwhile: the newer one is for the next check
            return None
        self._forget(key, alert)
        try:
            taken = await self._store.run(thd_take_alert, alert.id, self._clock.seconds())
        except BaseException:
            self._queued.setdefault(key, alert)  # not known to be taken: the next check tries again
            raise
        if not taken:
            return None
        self._taken[key] = alert
        self._log.info("alert {alert_id} taken: {side} {symbol}", alert_id=alert.id, side=alert.side, symbol=symbol)
        return signal

    def tried(self, account_id: int, symbol: str) -> None:
        """The trade of the alert last taken for this account and symbol was
        tried (placed, or refused for good): it stays used up."""
        self._taken.pop((account_id, symbol), None)

    async def release(self, account_id: int, symbol: str) -> bool:
        """Queue again the alert last taken for this account and symbol, whose
        trade could not be tried for a passing reason, if it is still valid
        and no newer alert came meanwhile; whether it was."""
        key = (account_id, symbol)
        alert = self._taken.pop(key, None)
        if alert is None or key in self._queued:
            return False
        if not await self._store.run(thd_release_alert, alert.id, self._clock.seconds()):
            return False
        self._queued.setdefault(key, alert)
        self._log.info(
            "alert {alert_id} ({side} {symbol}) queued again: its trade could not be tried",
            alert_id=alert.id, side=alert.side, symbol=symbol,
        )
        return True

    def _forget(self, key, alert) -> None:
        if self._queued.get(key) is alert:
            del self._queued[key]


def _short(text: str) -> str:
    return repr(text if len(text) <= 32 else text[:29] + "...")

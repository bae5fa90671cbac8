"""
The session's subscribers and deliveries: connections attached and streaming, each message
encoded and framed once for all of them, and the completions stored before any client sees
them, delivered once to the next connection that streams.

`DeliveryPart` is a part of `tradebot.loops.AccountSession`, which holds the state
its methods share.
"""

import functools

from twisted.internet import defer

from tradebot.store.faults import DatabaseFault
from tradebot.trading import messages
from tradebot.trading.failpoints import crash_point
from tradebot.trading.guard import guarded


class Subscriber:
    """What a session needs of a connection (the websocket protocol in
    production, a recorder in tests)."""

    def send_frame(self, frame, supersedes=None, written=None) -> None:
        """Write one encoded message. `supersedes` (a key, or None) marks a
        message that a later one with the same key makes stale: a connection
        that is behind may drop the older one. `written` (if given) is called
        once the frame is written to the connection, at once or when a client
        that was behind catches up; never if the frame is dropped."""
        raise NotImplementedError


def supersede_key(message: dict):
    """The key under which a newer message makes `message` stale, or None for
    a message that must always arrive: a trade's report (message 2) is
    superseded by its next report, a symbol's "checking" by its next one."""
    text = message.get("message")
    data = message.get("data") or {}
    if text == messages.ACTIVE_TRADE:
        return ("active", data.get("trade_id"))
    if text == messages.CHECKING:
        return ("checking", data.get("symbol"))
    return None


class DeliveryPart:
    """Methods of `tradebot.loops.AccountSession`: who hears the session and
    what they are sent. Connections attach, start and stop streaming; each
    message is encoded and framed once for every streaming connection; a
    completion is marked delivered once a streaming connection was handed its
    frame, and one nobody received goes to the next connection that streams.

    Uses the session's `account`, `_store`, `_trades`, `_metrics`, `_log`,
    its subscriber tables (`_attached`, `_streaming`, `_latest_report`,
    `_unmarked`, `_marking`) and `_update_loops`, `_encode`, `_track`."""

    def attach(self, connection) -> None:
        """An open connection of this account; it gets nothing until it streams."""
        self._attached.add(connection)

    def detach(self, connection) -> None:
        """A connection closed."""
        self._attached.discard(connection)
        self._streaming.pop(connection, None)
        self._update_loops()

    def start_streaming(self, connection):
        """Send this connection the session's messages from now on (ping).
        It gets the open trades and any undelivered completion at once.
        Returns a Deferred that fires when the catch-up has been sent."""
        if connection in self._streaming:
            return defer.succeed(None)
        self._attached.add(connection)
        self._streaming[connection] = set()
        for report in list(self._latest_report.values()):
            self._send(connection, self._encode(report), supersede_key(report))
        if not self._broker.available and self._broker.settled:
            reason = getattr(self._broker, "unavailable_reason", "")
            self._send(connection, self._encode(messages.broker_unavailable(reason)))
        if not self._store.health.writable:
            self._send(connection, self._encode(messages.trading_paused(self._store.health.fault.reason)))
        d = self._track(guarded(self._log, "delivering stored completions", self._deliver_pending, connection))
        d.addCallback(lambda _: self._update_loops())
        return d

    def stop_streaming(self, connection) -> None:
        """Send this connection nothing more until its next ping (stop)."""
        self._streaming.pop(connection, None)
        self._update_loops()

    @property
    def streaming_count(self) -> int:
        """How many connections stream this session."""
        return len(self._streaming)

    @property
    def idle(self) -> bool:
        """True when nothing is attached, nothing is live and the account does
        not trade alone: the session may be dropped."""
        return not self._attached and not self._trades and not self.account.always_on and not self._unmarked

    @property
    def live_trades(self):
        """The live trade records, by id."""
        return dict(self._trades)

    async def _deliver_pending(self, connection):
        pending = await self._store.pending_events(self.account.id)
        sent = self._streaming.get(connection)
        if sent is None:
            return
        for event in pending:
            if event.id not in sent and event.id not in self._unmarked:
                sent.add(event.id)
                self._send(connection, self._encode(event.payload), written=functools.partial(self._written, event.id))

    def _written(self, event_id: int) -> None:
        """An event's frame was written to a client's connection: record it
        delivered, once however many connections it went to. (A frame held
        back for a client that is behind counts only once written, so one
        dropped with that client stays pending for the account's next
        connection.)"""
        if event_id in self._marking:
            return
        self._marking.add(event_id)
        crash_point("after_delivery", event_ids=event_id)
        marked = self._track(guarded(self._log, "recording a delivered completion", self._mark_delivered, [event_id]))
        marked.addBoth(lambda _: self._marking.discard(event_id))

    async def _mark_delivered(self, event_ids) -> None:
        """Record that these events reached a client, with any whose record
        failed before. Until recorded they count as delivered here (no
        connection gets them again); never raises."""
        self._unmarked.update(event_ids)
        ids = sorted(self._unmarked)
        if not ids:
            return
        try:
            await self._store.mark_delivered(ids)
        except DatabaseFault as e:
            self._log.info("events {ids} were sent; recording it waits: {error}", ids=ids, error=e)
            return
        except Exception:
            self._log.failure("recording events {ids} as delivered failed; tried again later", ids=ids)
            return
        self._unmarked.difference_update(ids)

    def _publish(self, message: dict) -> int:
        """Send a message to every streaming connection, framed once; returns
        how many it went to."""
        if not self._streaming:
            return 0
        frame = self._encode(message)
        key = supersede_key(message)
        for connection in list(self._streaming):
            self._send(connection, frame, key)
        return len(self._streaming)

    def _send(self, connection, frame, supersedes=None, written=None) -> None:
        if self._metrics is not None:
            self._metrics.messages_sent.inc()
        try:
            connection.send_frame(frame, supersedes, written)
        except Exception:
            self._log.failure("sending to a connection of {name} failed", name=self.account.name)

    async def _publish_event(self, event_id: int, payload: dict):
        frame = None
        for connection, sent in list(self._streaming.items()):
            if event_id in sent:
                continue
            sent.add(event_id)
            frame = frame or self._encode(payload)
            self._send(connection, frame, written=functools.partial(self._written, event_id))

"""
Who may open a websocket, and how many: the limits checked at the handshake.

`Gatekeeper` keeps, per client address, the open connections, the handshakes of
the last minute and the failed ones (a missing or wrong token), and per account
the open connections. A handshake past a limit is refused before the token is
even looked up where possible: HTTP 503 when the server is full, 429 for one
address or one account asking too much. An address whose handshakes keep
failing is slowed down (each refusal waits a little longer), then locked out
for a while. Each kind of refusal is logged once a minute per address or
account, not once per attempt.

The client's address is the TCP peer's, or, when the peer is a trusted proxy,
the right-most address in ``X-Forwarded-For`` that is not itself a trusted
proxy. Limits count an address by `tradebot.server.addresses.address_key` (an IPv6
address by its /64), in tables that forget an address once it has been quiet
for two minutes and never hold more than `Limits.max_tracked` of them.

It also counts the plain-HTTP connections of each address (before any
upgrade to a websocket: `http_opened`), and, apart from everything else, the
wrong webhook secrets of each address (`webhook_failed`): alert senders such
as TradingView post from a few shared addresses, so a wrong secret from one
of them must not shut out the websocket, the API, or the right secrets.
"""

import collections
from typing import Dict, Optional, Tuple

import attrs
from twisted.logger import Logger

from tradebot.server.addresses import Deadlines, RecentCounts, RecentEvents, address_key

#: Seconds over which handshakes and failures are counted.
WINDOW = 60.0


@attrs.frozen
class Limits:
    """The connection limits (see ``contrib/tradebot.toml``)."""

    max_connections: int = 10000
    per_account: int = 20
    per_ip: int = 100
    handshakes_per_ip_per_minute: int = 300
    #: Failed handshakes a minute from one address before each refusal waits...
    slow_after_failures: int = 5
    #: ...and before the address is refused outright for `lockout` seconds.
    lock_after_failures: int = 30
    lockout: float = 600.0
    trusted_proxies: Tuple[str, ...] = ()
    #: Addresses tracked at most in each table (failures, handshakes, lockouts).
    max_tracked: int = 50000


class Refused(Exception):
    """A handshake refused by a limit: `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Gatekeeper:
    """Counts connections and handshakes and says yes or no (see the module
    docstring). `clock` gives ``seconds()``."""

    _log = Logger()

    def __init__(self, limits: Limits, clock):
        self.limits = limits
        self.clock = clock
        self.total = 0
        self.by_ip: Dict[str, int] = collections.Counter()  # open websockets, by address key
        self.http_by_ip: Dict[str, int] = collections.Counter()  # open plain-HTTP connections
        self.by_account: Dict[int, int] = collections.Counter()
        self._handshakes = RecentCounts(WINDOW, limits.max_tracked)
        self._failures = RecentEvents(limits.lock_after_failures, WINDOW, limits.max_tracked)
        self._webhook_failures = RecentEvents(limits.lock_after_failures, WINDOW, limits.max_tracked)
        self._locked = Deadlines(limits.max_tracked)
        self._webhook_locked = Deadlines(limits.max_tracked)
        self._logged: Dict[Tuple[str, str], float] = {}
        self._pruned = clock.seconds()

    def client_ip(self, peer: str, forwarded_for: Optional[str]) -> str:
        """The client's address: `peer`, or through trusted proxies the
        right-most untrusted address of ``X-Forwarded-For``."""
        trusted = self.limits.trusted_proxies
        if peer not in trusted or not forwarded_for:
            return peer
        for address in reversed([a.strip() for a in forwarded_for.split(",") if a.strip()]):
            if address not in trusted:
                return address
        return peer

    def _now(self) -> float:
        """The clock's time; now and then, the tables' quiet addresses forgotten."""
        now = self.clock.seconds()
        if now - self._pruned >= WINDOW:
            self._pruned = now
            for table in (self._handshakes, self._failures, self._webhook_failures, self._locked, self._webhook_locked):
                table.prune(now)
        return now

    def before_token(self, ip: str) -> None:
        """Raise `Refused` if `ip` may not even try: locked out, too many
        handshakes this minute, too many connections, or the server full."""
        now = self._now()
        key = address_key(ip)
        if self._locked.active(key, now):
            self._refuse(429, "too many failed handshakes; try again later", key)
        if self._handshakes.count(key, now) >= self.limits.handshakes_per_ip_per_minute:
            self._refuse(429, "too many handshakes from this address", key)
        self._handshakes.add(key, now)
        if self.total >= self.limits.max_connections:
            self._refuse(503, "the server has no room for more connections", "*")
        if self.by_ip[key] >= self.limits.per_ip:
            self._refuse(429, "too many connections from this address", key)

    def locked(self, ip: str) -> bool:
        """True while `ip` is locked out after failing too often (websocket
        handshakes and API tokens; webhook secrets are counted apart)."""
        return self._locked.active(address_key(ip), self._now())

    def failed(self, ip: str) -> float:
        """A handshake (or an API call) from `ip` failed (no or a wrong
        token): the seconds its refusal should wait (0 until it has failed
        often)."""
        now = self._now()
        key = address_key(ip)
        self._failures.limit = self.limits.lock_after_failures
        count = self._failures.add(key, now)
        if count >= self.limits.lock_after_failures:
            self._locked.set(key, now + self.limits.lockout, now)
            self._log_once("locked", key, "address {ip} locked out for {seconds:g} s after {n} failed handshakes", seconds=self.limits.lockout, n=count)
            return 0.0
        return self._slowdown("slowed", key, count, "failed handshakes")

    def _slowdown(self, kind: str, key: str, count: int, what: str) -> float:
        if count > self.limits.slow_after_failures:
            self._log_once(kind, key, "address {ip}: " + what + " are being slowed down ({n} this minute)", n=count)
            return min(0.25 * (count - self.limits.slow_after_failures), 5.0)
        return 0.0

    def webhook_locked(self, ip: str) -> bool:
        """True while `ip` has sent too many wrong webhook secrets: its wrong
        ones are refused at once (a right one never is)."""
        return self._webhook_locked.active(address_key(ip), self._now())

    def webhook_failed(self, ip: str) -> float:
        """A webhook call from `ip` named a secret nobody has: the seconds its
        answer should wait. Counted apart from handshakes and API tokens."""
        now = self._now()
        key = address_key(ip)
        self._webhook_failures.limit = self.limits.lock_after_failures
        count = self._webhook_failures.add(key, now)
        if count >= self.limits.lock_after_failures:
            self._webhook_locked.set(key, now + self.limits.lockout, now)
            self._log_once("webhook-locked", key, "address {ip}: wrong webhook secrets refused at once for {seconds:g} s after {n}", seconds=self.limits.lockout, n=count)
            return 0.0
        return self._slowdown("webhook-slowed", key, count, "wrong webhook secrets")

    def check_account(self, account_id: int, ip: str) -> None:
        """Raise `Refused` (429) if the account has all the connections it may."""
        if self.by_account[account_id] >= self.limits.per_account:
            self._refuse(429, "too many connections for this account", f"account {account_id}")

    def opened(self, ip: str, account_id: int) -> None:
        """A websocket was accepted."""
        self.total += 1
        self.by_ip[address_key(ip)] += 1
        self.by_account[account_id] += 1

    def closed(self, ip: str, account_id: int) -> None:
        """An accepted websocket closed."""
        self.total -= 1
        _decrement(self.by_ip, address_key(ip))
        _decrement(self.by_account, account_id)

    def http_opened(self, peer: str) -> bool:
        """A TCP connection from `peer` opened on the public port: False if
        its address already has all the plain-HTTP connections it may (a
        trusted proxy's are not counted)."""
        if peer in self.limits.trusted_proxies:
            return True
        key = address_key(peer)
        if self.http_by_ip[key] >= self.limits.per_ip:
            self._log_once("http", key, "refused a connection from {ip}: too many open plain-HTTP connections")
            return False
        self.http_by_ip[key] += 1
        return True

    def http_closed(self, peer: str) -> None:
        """A connection `http_opened` counted closed, or became a websocket."""
        if peer not in self.limits.trusted_proxies:
            _decrement(self.http_by_ip, address_key(peer))

    def _refuse(self, status: int, reason: str, key: str):
        self._log_once(reason, key, "refused a handshake from {ip}: {reason} ({status})", reason=reason, status=status)
        raise Refused(status, reason)

    def _log_once(self, kind: str, key: str, format: str, **fields) -> None:
        now = self.clock.seconds()
        if self._logged.get((kind, key), -WINDOW) > now - WINDOW:
            return
        self._logged[(kind, key)] = now
        if len(self._logged) > 10000:  # forget what is old
            self._logged = {k: t for k, t in self._logged.items() if t > now - WINDOW}
        self._log.warn(format, ip=key, **fields)


def _decrement(counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def parse_addresses(text: Optional[str]) -> Tuple[str, ...]:
    """A comma-separated list of addresses or origins, trimmed; () for none."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())

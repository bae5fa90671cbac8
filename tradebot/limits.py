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
proxy.
"""

import collections
from typing import Dict, Optional, Tuple

import attrs
from twisted.logger import Logger

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
        self.by_ip: Dict[str, int] = collections.Counter()
        self.by_account: Dict[int, int] = collections.Counter()
        self._handshakes: Dict[str, collections.deque] = {}
        self._failures: Dict[str, collections.deque] = {}
        self._locked_until: Dict[str, float] = {}
        self._logged: Dict[Tuple[str, str], float] = {}

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

    def _recent(self, table: Dict[str, collections.deque], ip: str, now: float) -> collections.deque:
        times = table.get(ip)
        if times is None:
            times = table[ip] = collections.deque()
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return times

    def before_token(self, ip: str) -> None:
        """Raise `Refused` if `ip` may not even try: locked out, too many
        handshakes this minute, too many connections, or the server full."""
        now = self.clock.seconds()
        if self._locked_until.get(ip, 0) > now:
            self._refuse(429, "too many failed handshakes; try again later", ip)
        handshakes = self._recent(self._handshakes, ip, now)
        if len(handshakes) >= self.limits.handshakes_per_ip_per_minute:
            self._refuse(429, "too many handshakes from this address", ip)
        handshakes.append(now)
        if self.total >= self.limits.max_connections:
            self._refuse(503, "the server has no room for more connections", "*")
        if self.by_ip[ip] >= self.limits.per_ip:
            self._refuse(429, "too many connections from this address", ip)

    def locked(self, ip: str) -> bool:
        """True while `ip` is locked out after failing too often (on any
        surface: websocket handshakes, API tokens, webhook secrets)."""
        return self._locked_until.get(ip, 0) > self.clock.seconds()

    def failed(self, ip: str) -> float:
        """A handshake from `ip` failed (no or a wrong token): the seconds its
        refusal should wait (0 until it has failed often)."""
        now = self.clock.seconds()
        failures = self._recent(self._failures, ip, now)
        failures.append(now)
        count = len(failures)
        if count >= self.limits.lock_after_failures:
            self._locked_until[ip] = now + self.limits.lockout
            self._log_once("locked", ip, "address {ip} locked out for {seconds:g} s after {n} failed handshakes", seconds=self.limits.lockout, n=count)
            return 0.0
        if count > self.limits.slow_after_failures:
            self._log_once("slowed", ip, "address {ip}: failed handshakes are being slowed down ({n} this minute)", n=count)
            return min(0.25 * (count - self.limits.slow_after_failures), 5.0)
        return 0.0

    def check_account(self, account_id: int, ip: str) -> None:
        """Raise `Refused` (429) if the account has all the connections it may."""
        if self.by_account[account_id] >= self.limits.per_account:
            self._refuse(429, "too many connections for this account", f"account {account_id}")

    def opened(self, ip: str, account_id: int) -> None:
        """A connection was accepted."""
        self.total += 1
        self.by_ip[ip] += 1
        self.by_account[account_id] += 1

    def closed(self, ip: str, account_id: int) -> None:
        """An accepted connection closed."""
        self.total -= 1
        _decrement(self.by_ip, ip)
        _decrement(self.by_account, account_id)

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

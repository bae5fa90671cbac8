"""
Per-address bookkeeping that cannot be grown without bound by a caller.

Limits count a client by `address_key`: an IPv4 address as it is, an IPv6
address by its /64 (a single host is given a whole /64, so counting its
addresses one by one would hand an attacker endless fresh ones). Counts are
kept in tables of bounded size whose least recently touched keys are dropped
first, and which forget a quiet key: `RecentEvents` counts exactly up to a
limit (failures, where one more must lock out), `RecentCounts` estimates a
rate from two fixed windows, the previous one weighted by how much of it still
lies within the last window (the sliding-window estimate rate limiters use;
a handful of numbers per key however high the rate).
"""

import collections
import ipaddress
import math
from typing import Optional


def address_key(ip: Optional[str]) -> Optional[str]:
    """What per-address limits count `ip` as: an IPv4 address itself, an
    IPv4-mapped IPv6 address as its IPv4, another IPv6 address as its /64
    network; anything that is no address, unchanged."""
    if ip is None:
        return None
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class RecentCounts:
    """How many events each key had in the last `window` seconds (see the
    module docstring), for at most `capacity` keys."""

    def __init__(self, window: float = 60.0, capacity: int = 50000):
        self.window = window
        self.capacity = capacity
        # key -> [start of the current window, events in the previous, in the current]
        self._entries: "collections.OrderedDict[str, list]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key: str, now: float, create: bool):
        entry = self._entries.get(key)
        start = math.floor(now / self.window) * self.window
        if entry is None:
            if not create:
                return None
            entry = self._entries[key] = [start, 0, 0]
            if len(self._entries) > self.capacity:
                self.prune(now)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        elif start != entry[0]:
            previous = entry[2] if start - entry[0] == self.window else 0
            entry[:] = [start, previous, 0]
        self._entries.move_to_end(key)
        return entry

    def _estimate(self, entry, now: float) -> float:
        weight = 1.0 - (now - entry[0]) / self.window
        return entry[2] + entry[1] * max(0.0, weight)

    def add(self, key: str, now: float) -> float:
        """Count one event of `key` at `now`; the events of the last window,
        this one included."""
        entry = self._entry(key, now, create=True)
        entry[2] += 1
        return self._estimate(entry, now)

    def count(self, key: str, now: float) -> float:
        """The events of `key` in the last window."""
        entry = self._entry(key, now, create=False)
        return 0.0 if entry is None else self._estimate(entry, now)

    def prune(self, now: float) -> None:
        """Forget the keys with no event in the last two windows."""
        horizon = math.floor(now / self.window) * self.window - self.window
        for key in [k for k, entry in self._entries.items() if entry[0] < horizon]:
            del self._entries[key]


class RecentEvents:
    """The events of each key in the last `window` seconds, counted exactly
    up to `limit` (only the last `limit` times are kept: a count that reached
    the limit is all a limit needs to know), for at most `capacity` keys."""

    def __init__(self, limit: int, window: float = 60.0, capacity: int = 50000):
        self.limit = limit
        self.window = window
        self.capacity = capacity
        self._times: "collections.OrderedDict[str, collections.deque]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def add(self, key: str, now: float) -> int:
        """Count one event of `key` at `now`; the events of the last window,
        this one included (at most `limit`)."""
        times = self._times.get(key)
        if times is None or times.maxlen != self.limit:
            times = self._times[key] = collections.deque(times or (), maxlen=self.limit)
        times.append(now)
        self._times.move_to_end(key)
        if len(self._times) > self.capacity:
            self.prune(now)
            while len(self._times) > self.capacity:
                self._times.popitem(last=False)
        return self.count(key, now)

    def count(self, key: str, now: float) -> int:
        """The events of `key` in the last window (at most `limit`)."""
        times = self._times.get(key)
        if times is None:
            return 0
        return sum(1 for t in times if t > now - self.window)

    def prune(self, now: float) -> None:
        """Forget the keys with no event in the last window."""
        for key in [k for k, times in self._times.items() if not times or times[-1] <= now - self.window]:
            del self._times[key]


class Deadlines:
    """A time per key (an address locked out until then), for at most
    `capacity` keys; a key whose time has passed is forgotten."""

    def __init__(self, capacity: int = 50000):
        self.capacity = capacity
        self._until: "collections.OrderedDict[str, float]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def set(self, key: str, until: float, now: float) -> None:
        """`key` holds until `until`."""
        self._until[key] = until
        self._until.move_to_end(key)
        if len(self._until) > self.capacity:
            self.prune(now)
            while len(self._until) > self.capacity:
                self._until.popitem(last=False)

    def active(self, key: str, now: float) -> bool:
        """Whether `key`'s time is still to come."""
        until = self._until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._until[key]
            return False
        return True

    def prune(self, now: float) -> None:
        """Forget every key whose time has passed."""
        for key in [k for k, until in self._until.items() if until <= now]:
            del self._until[key]

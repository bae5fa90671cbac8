"""
The paper backend a ``paper://`` URL names: the market, its accounts, and
their saving through the store (coalesced: one write under way, at most one
queued).
"""

import math
from decimal import Decimal, InvalidOperation
from typing import Dict, List, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tradebot.broker import BrokerBackend, BrokerURL
from tradebot.brokers.paper.account import PaperBroker
from tradebot.brokers.paper.catalog import CATALOG
from tradebot.brokers.paper.market import PaperMarket
from tradebot.store.faults import DatabaseFault

#: The key under which the store keeps this backend's documents.
STATE_KEY = "paper"


def _param(params: dict, key: str, kind, default, check, meaning: str):
    if key not in params:
        return default
    try:
        value = kind(params[key])
    except (ValueError, InvalidOperation):
        raise ValueError(f"paper broker: {key} must be {meaning}, not {params[key]!r}")
    if not check(value):
        raise ValueError(f"paper broker: {key} must be {meaning}, not {params[key]!r}")
    return value


class PaperBackend(BrokerBackend):
    """The paper broker a ``paper://`` URL names: one market, many accounts."""

    _log = Logger()
    name = "paper"

    def description(self) -> str:
        """The paper URL: its seed, speed, balance and leverage are no secret."""
        return self.url

    def __init__(self, store=None, reactor=None, seed=7, speed=1.0, balance=Decimal(10000), leverage=100, market=None):
        if reactor is None:
            from twisted.internet import reactor
        self.store = store
        self.reactor = reactor
        self.seed = seed
        self.speed = speed
        self.default_balance = balance
        self.leverage = leverage
        self.url = f"paper://?seed={seed}&speed={speed:g}&balance={balance}&leverage={leverage}"
        #: Where simulated time starts for a new market (default: this minute).
        self.origin: Optional[float] = None
        self.market: Optional[PaperMarket] = None
        #: A market to start with instead of a new random one (a `BarReplayMarket`).
        self._given_market = market
        self._accounts: Dict[str, PaperBroker] = {}
        self._saved: dict = {}
        #: Deferreds of the saves asked for since the write under way began.
        self._save_waiters: List[defer.Deferred] = []
        self._writing = None  # (changes it holds, its waiters) while a write is under way
        self._changes = 0  # positions opened or closed so far
        self._saved_to = 0  # how many of them the store holds

    @classmethod
    def from_url(cls, url: BrokerURL, store=None, reactor=None) -> "PaperBackend":
        """The backend for a parsed ``paper`` URL; ValueError on a bad parameter."""
        unknown = set(url.params) - {"seed", "speed", "balance", "leverage"}
        if unknown:
            raise ValueError(f"paper broker: unknown parameter(s) {', '.join(sorted(unknown))}")
        params = url.params
        return cls(
            store=store,
            reactor=reactor,
            seed=_param(params, "seed", int, 7, lambda v: v >= 0, "a whole number from 0"),
            speed=_param(params, "speed", float, 1.0, lambda v: 0 < v <= 100000 and math.isfinite(v), "a number of simulated seconds per second, over 0"),
            balance=_param(params, "balance", Decimal, Decimal(10000), lambda v: v.is_finite() and v > 0, "an amount over 0"),
            leverage=_param(params, "leverage", int, 100, lambda v: v >= 1, "a whole number from 1"),
        )

    def known_symbols(self):
        """The paper catalog's symbol names."""
        return frozenset(CATALOG)

    @defer.inlineCallbacks
    def start(self):
        """Build the market, or load the saved one and its accounts."""
        self.market = self._given_market or PaperMarket(self.reactor, seed=self.seed, speed=self.speed, origin=self.origin)
        self.market.leverage = Decimal(self.leverage)
        self.market.on_change = self._changed
        if self.store is not None:
            self._saved = yield self.store.load_broker_state(STATE_KEY)
        if "market" in self._saved:
            self.market.load(self._saved["market"])
            if self.market.seed != self.seed:
                self._log.warn(
                    "carrying on the saved paper market (seed {saved}); seed {asked} is ignored",
                    saved=self.market.seed,
                    asked=self.seed,
                )
            for key, document in self._saved.items():
                if key.startswith("account:"):
                    self._account(key[len("account:") :], None).load(document)
            self._log.info(
                "paper market resumed: {n} account(s), {open} open position(s)",
                n=len(self._accounts),
                open=sum(len(a.positions) for a in self._accounts.values()),
            )

    def stop(self):
        """Deferred: everything saved."""
        if self.market is None:
            return defer.succeed(None)
        return self.save()

    def broker_for(self, account_key: str, initial_balance) -> PaperBroker:
        """The same `PaperBroker` for every call with the same key; a new
        account starts with `initial_balance` (or the URL's balance)."""
        return self._account(account_key, initial_balance)

    def _account(self, key: str, initial_balance) -> PaperBroker:
        broker = self._accounts.get(key)
        if broker is None:
            balance = self.default_balance if initial_balance is None else Decimal(initial_balance)
            broker = self._accounts[key] = PaperBroker(self.market, key, balance, self._opened, self.durable)
        return broker

    def _opened(self):
        self._changes += 1
        return self.save()

    def _changed(self) -> None:
        self._changes += 1
        self.save().addErrback(self._save_failed)

    def _save_failed(self, failure) -> None:
        if failure.check(DatabaseFault):  # the store says so; the next save writes what changed
            self._log.warn("saving the paper market failed: {error}", error=failure.value)
        else:
            self._log.failure("saving the paper market failed", failure)

    def durable(self):
        """Deferred: fires once every position opened or closed so far is
        saved (at once when it is); fails if saving it fails."""
        if self._saved_to >= self._changes:
            return defer.succeed(None)
        if self._writing is not None and self._writing[0] >= self._changes:
            waiter = defer.Deferred()
            self._writing[1].append(waiter)
            return waiter
        return self.save()

    def save(self):
        """Deferred: the market and every account as they are now saved in one
        transaction.

        Saves coalesce: while one is being written, every save asked for
        meanwhile waits for a single next write, whose snapshot is taken when
        it starts and so holds all of their changes. However fast the market
        changes, at most one snapshot is held and one write is queued; and a
        write carries the market and only the accounts that changed."""
        if self.store is None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._save_waiters.append(waiter)
        if self._writing is None:
            self._write_next()
        return waiter

    def _write_next(self) -> None:
        waiters, self._save_waiters = self._save_waiters, []
        if not waiters:
            return
        changes = self._changes
        self._writing = (changes, waiters)
        # the market always; of the accounts, only those that changed
        changed = [broker for broker in self._accounts.values() if broker.changed]
        try:
            documents = {"market": self.market.save()}
            for broker in changed:
                documents["account:" + broker.key] = broker.save()
                broker.changed = False
            written = self.store.save_broker_state(STATE_KEY, documents)
        except Exception:
            written = defer.fail()

        def _settle(result):
            self._writing = None
            if isinstance(result, Failure):
                for broker in changed:
                    broker.changed = True  # the next write carries them again
            else:
                self._saved_to = max(self._saved_to, changes)
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)
            self._write_next()

        written.addBoth(_settle)

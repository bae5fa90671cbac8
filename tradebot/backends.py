"""
The broker backends of one server: the server's own (``--broker``) and one per
broker URL that accounts name for themselves (their MT5 terminals).

Each backend comes with its own `MarketData`, since two brokers quote the same
symbol differently. An account's backend is built and started the first time
one of its sessions needs it; one MT5 terminal (one worker process) then serves
every account that names its URL. A backend that hangs or dies stalls only the
accounts trading through it.
"""

from typing import Callable, Dict, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from tradebot.broker import Broker, BrokerBackend, backend_from_url
from tradebot.market import MarketData
from tradebot.records import Account


class Backends:
    """Broker backends by URL, with the server's `default` for accounts that
    name none. `make` builds a backend from a URL (default: the broker
    factory, with `store` and `reactor`)."""

    _log = Logger()

    def __init__(
        self,
        default: BrokerBackend,
        reactor,
        store=None,
        market_max_age: float = 1.0,
        make: Callable[[str], BrokerBackend] = None,
        metrics=None,
    ):
        self.default = default
        self._metrics = metrics
        if metrics is not None:
            default.metrics = metrics
        self._reactor = reactor
        self._market_max_age = market_max_age
        self._make = make or (lambda url: backend_from_url(url, store=store, reactor=reactor))
        self._default_market = MarketData(reactor, max_age=market_max_age)
        self._own: Dict[str, Tuple[BrokerBackend, MarketData]] = {}  # by terminal
        self._by_url: Dict[str, Tuple[BrokerBackend, MarketData]] = {}

    def start(self, urls=()):
        """Deferred: the server's backend started, and the backends of
        `urls` (the accounts' own) starting. Others start when first used."""
        for url in urls:
            try:
                self._own_backend(url)
            except ValueError as e:
                self._log.error("an account's broker URL is refused: {error}", error=e)
        return self.default.start()

    def broker_for(self, account: Account) -> Tuple[Broker, MarketData]:
        """The account's `Broker` and the `MarketData` of its backend."""
        if account.broker is None:
            backend, market = self.default, self._default_market
        else:
            backend, market = self._own_backend(account.broker)
        return backend.broker_for(str(account.id), account.balance), market

    def _own_backend(self, url: str) -> Tuple[BrokerBackend, MarketData]:
        known = self._by_url.get(url)
        if known is not None:
            return known
        backend = self._make(url)
        if self._metrics is not None:
            backend.metrics = self._metrics
        # two URLs naming one terminal get one backend: two workers would
        # fight over the terminal's single connection and its account
        identity = getattr(backend, "identity", backend.url)
        known = self._own.get(identity)
        if known is None:
            known = self._own[identity] = (backend, MarketData(self._reactor, max_age=self._market_max_age))
            defer.maybeDeferred(backend.start).addErrback(
                lambda f: self._log.failure("broker {url} could not start", f, url=backend.url)
            )
        elif known[0].url != backend.url:
            self._log.warn(
                "broker {url} names the same terminal as {first}: trading through {first}",
                url=backend.url,
                first=known[0].url,
            )
        self._by_url[url] = known
        return known

    @property
    def backends(self):
        """Every backend built so far, the server's first."""
        return [self.default] + [backend for backend, _ in self._own.values()]

    def stop(self):
        """Deferred: every backend stopped; a failure is logged, not raised,
        so the others still stop."""

        def _stop(backend):
            return defer.maybeDeferred(backend.stop).addErrback(
                lambda f: self._log.failure("stopping broker {url} failed", f, url=backend.url)
            )

        return defer.gatherResults([_stop(b) for b in self.backends])

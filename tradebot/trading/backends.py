"""
The broker backends of one server: the server's own (``--broker``) and one per
broker URL that accounts name for themselves (their MT5 terminals).

Each backend comes with its own `MarketData`, since two brokers quote the same
symbol differently. An account's backend is built and started the first time
one of its sessions needs it; one MT5 terminal (one worker process) then serves
every account that names its URL. A backend that hangs or dies stalls only the
accounts trading through it.

Each backend is named, in logs, ``/health`` and ``/metrics``, by an opaque,
stable name (`tradebot.store.serverkeys.broker_name`) made here with the database's
broker-name key (`name_key`), unless its URL gives one (``name=``); never by
the login, server, path or address in its URL.

An account may store its terminal's password, encrypted (`tradebot.store.credentials`):
it is decrypted here and handed to the backend before it starts, so the
terminal logs in with it. An account whose stored password cannot be decrypted
(no key, or not its key) gets an `UnavailableBroker`: its session never
trades, its clients are told why, and every other account carries on.
"""

import secrets
from typing import Callable, Dict, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from tradebot.broker import Broker, BrokerBackend, BrokerUnavailable
from tradebot.brokers.registry import backend_from_url
from tradebot.store import credentials, serverkeys
from tradebot.store.records import Account
from tradebot.trading.market import MarketData

#: What the clients of an account whose password cannot be decrypted are told.
LOCKED_REASON = (
    "the server cannot decrypt this account's stored broker password: "
    f"its secret key ({credentials.KEY_ENV}) is missing or wrong"
)


class UnavailableBroker(Broker):
    """The broker of an account that cannot trade at all until the server is
    restarted differently: never available, `unavailable_reason` says why,
    every call fails with `BrokerUnavailable`."""

    available = False
    settled = True

    def __init__(self, reason: str):
        self.unavailable_reason = reason

    def _fail(self, *args, **kwargs):
        return defer.fail(BrokerUnavailable(self.unavailable_reason))

    balance = equity = symbol = tick = candles = calc_profit = open_position = close_position = _fail
    position = closed_position = find_by_comment = open_positions = _fail


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
        decrypt: Callable[[str], str] = None,
    ):
        self.default = default
        self._decrypt = decrypt or credentials.decrypt
        # account id -> (its encrypted password, the password or why not)
        self._passwords: Dict[int, Tuple[str, object]] = {}
        #: Accounts that cannot trade because their stored password cannot be
        #: decrypted: name -> why (for /health).
        self.locked_accounts: Dict[str, str] = {}
        self._metrics = metrics
        if metrics is not None:
            default.metrics = metrics
        self._reactor = reactor
        self._market_max_age = market_max_age
        self._make = make or (lambda url: backend_from_url(url, store=store, reactor=reactor))
        self._default_market = MarketData(reactor, max_age=market_max_age)
        self._own: Dict[str, Tuple[BrokerBackend, MarketData]] = {}  # by terminal
        self._by_url: Dict[str, Tuple[BrokerBackend, MarketData]] = {}
        #: The key broker names are made with (the server sets the
        #: database's before `start`); a random one, unstable across
        #: restarts, until then.
        self.name_key: bytes = secrets.token_bytes(32)

    def start(self, accounts=()):
        """Deferred: the server's backend started, and the backends of
        `accounts` (those naming their own broker) starting, with their stored
        passwords. Others start when first used."""
        for account in accounts:
            try:
                self._account_backend(account)
            except ValueError as e:
                self._log.error("the broker URL of account {name} is refused: {error}", name=account.name, error=e)
            except credentials.CredentialsError:
                pass  # logged; the account's sessions get an UnavailableBroker
        self._give_name(self.default)
        return self.default.start()

    def broker_for(self, account: Account) -> Tuple[Broker, MarketData]:
        """The account's `Broker` and the `MarketData` of its backend; an
        `UnavailableBroker` if its stored broker password cannot be decrypted."""
        if account.broker is None:
            backend, market = self.default, self._default_market
        else:
            try:
                backend, market = self._account_backend(account)
            except credentials.CredentialsError:
                return UnavailableBroker(LOCKED_REASON), MarketData(self._reactor, max_age=self._market_max_age)
        return backend.broker_for(str(account.id), account.balance), market

    def _account_backend(self, account: Account) -> Tuple[BrokerBackend, MarketData]:
        """The backend of the account's own broker URL, given its stored
        password; raises `credentials.CredentialsError` (logged once per
        account) when that password cannot be decrypted."""
        return self._own_backend(account.broker, self._password_of(account), account.name)

    def _password_of(self, account: Account) -> Optional[str]:
        token = account.broker_password_encrypted
        if token is None:
            return None
        known = self._passwords.get(account.id)
        if known is None or known[0] != token:
            try:
                outcome = self._decrypt(token)
            except credentials.CredentialsError as e:
                outcome = e
                self._log.error(
                    "account {name} will not trade: its stored broker password cannot be decrypted "
                    "({reason}); start the server with the key it was stored under in ${variable}",
                    name=account.name,
                    reason=e,
                    variable=credentials.KEY_ENV,
                )
            known = self._passwords[account.id] = (token, outcome)
        if isinstance(known[1], credentials.CredentialsError):
            self.locked_accounts[account.name] = f"its stored broker password cannot be decrypted: {known[1]}"
            raise known[1]
        self.locked_accounts.pop(account.name, None)
        return known[1]

    def _own_backend(self, url: str, password: Optional[str] = None, name: str = "") -> Tuple[BrokerBackend, MarketData]:
        known = self._by_url.get(url)
        if known is not None:
            self._give_password(known[0], password, name)
            return known
        backend = self._make(url)
        self._give_name(backend)
        if self._metrics is not None:
            backend.metrics = self._metrics
        # two URLs naming one terminal get one backend: two workers would
        # fight over the terminal's single connection and its account
        identity = getattr(backend, "identity", backend.url)
        known = self._own.get(identity)
        if known is None:
            known = self._own[identity] = (backend, MarketData(self._reactor, max_age=self._market_max_age))
            self._give_password(backend, password, name)
            defer.maybeDeferred(backend.start).addErrback(
                lambda f: self._log.failure("broker {broker} could not start", f, broker=backend.name)
            )
        else:
            if known[0].url != backend.url:
                self._log.warn(
                    "two broker URLs name the terminal {broker}: it trades for the accounts of both",
                    broker=known[0].name,
                )
            self._give_password(known[0], password, name)
        self._by_url[url] = known
        return known

    def _give_name(self, backend: BrokerBackend) -> None:
        """Name a terminal opaquely from its identity, unless its URL named it."""
        identity = getattr(backend, "identity", "")
        if identity and not getattr(backend, "given_name", None):
            backend.name = serverkeys.broker_name(identity, self.name_key)

    def _give_password(self, backend: BrokerBackend, password: Optional[str], name: str) -> None:
        """Have `backend` log in with the password stored for account `name`;
        a terminal keeps the first it was given."""
        if password is None:
            return
        if not backend.use_password(password):
            self._log.warn(
                "the stored broker password of account {name} differs from the one {broker} already has; "
                "{broker} keeps the first",
                name=name,
                broker=backend.name,
            )

    @property
    def backends(self):
        """Every backend built so far, the server's first."""
        return [self.default] + [backend for backend, _ in self._own.values()]

    def stop(self):
        """Deferred: every backend stopped; a failure is logged, not raised,
        so the others still stop."""

        def _stop(backend):
            return defer.maybeDeferred(backend.stop).addErrback(
                lambda f: self._log.failure("stopping broker {broker} failed", f, broker=backend.name)
            )

        return defer.gatherResults([_stop(b) for b in self.backends])

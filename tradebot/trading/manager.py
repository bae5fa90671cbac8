"""
`SessionManager`: the parent service of the account sessions. It creates a
session when an account's first connection arrives, resumes at start-up every
account with a live trade (or set always-on), and drops sessions that have
nothing left to do.
"""

from typing import Dict, Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from tradebot.loops import AccountSession
from tradebot.store.records import Account
from tradebot.trading import messages


class SessionManager(MultiService):
    """The parent of every account session: creates them on demand, resumes
    the ones with live trades at start-up, drops idle ones."""

    _log = Logger()

    def __init__(
        self,
        store,
        backends,
        strategy,
        plans,
        clock,
        signal_interval: float,
        monitor_interval: float,
        encode=messages.encode,
        metrics=None,
        alerts=None,
    ):
        super().__init__()
        self._metrics = metrics
        self._alerts = alerts
        self._store = store
        self._backends = backends
        self._strategy = strategy
        self._plans = plans
        self._clock = clock
        self._signal_interval = signal_interval
        self._monitor_interval = monitor_interval
        self.encode = encode
        self._sessions: Dict[int, AccountSession] = {}
        self.ready: Optional[defer.Deferred] = None

    def startService(self):
        """Start, and resume every account with a live trade or set
        always-on; `ready` fires when they all run."""
        super().startService()
        self.ready = defer.ensureDeferred(self._resume())

    async def _resume(self):
        accounts = await self._store.accounts_to_resume()
        for account in accounts:
            await self.session_for(account)
        if accounts:
            self._log.info("resumed {n} account session(s)", n=len(accounts))

    def session_for(self, account: Account, connection=None):
        """Deferred[AccountSession]: the account's session, created and started
        if it has none yet, with `connection` (if given) attached to it."""
        session = self._sessions.get(account.id)
        if session is None:
            broker, market = self._backends.broker_for(account)
            session = AccountSession(
                account,
                self._store,
                broker,
                market,
                self._strategy,
                self._plans,
                self._clock,
                self._signal_interval,
                self._monitor_interval,
                self.encode,
                on_idle=lambda: self.release(account.id),
                metrics=self._metrics,
                alerts=self._alerts,
            )
            self._sessions[account.id] = session
            if connection is not None:
                session.attach(connection)
            session.setServiceParent(self)
        elif connection is not None:
            session.attach(connection)
        if session._ready:
            return defer.succeed(session)
        waiter = defer.Deferred()
        session.ready.addBoth(lambda r: (waiter.callback(session), r)[1])
        return waiter

    def get(self, account_id: int) -> Optional[AccountSession]:
        """The account's running session, if any."""
        return self._sessions.get(account_id)

    def release(self, account_id: int) -> None:
        """Drop the account's session if it has nothing left to do."""
        session = self._sessions.get(account_id)
        if session is not None and session.idle and session._ready:
            del self._sessions[account_id]
            session.disownServiceParent()

    @property
    def sessions(self):
        """The running sessions, by account id."""
        return dict(self._sessions)

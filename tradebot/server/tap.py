"""
``twistd tradebot``: its options and the service tree they build.

Each option can come from the command line, the environment (``TRADEBOT_DB``,
``TRADEBOT_BROKER``), a TOML file given with ``--config``, or its default, in
that order of precedence.
"""

import os
import sys

from twisted.application.service import MultiService
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage

from tradebot.brokers.registry import backend_from_url, check_url
from tradebot.plans.files import load_plan
from tradebot.plans.plan import PlanError
from tradebot.server.health import HealthCheck
from tradebot.server.limits import Limits, parse_addresses
from tradebot.server.metrics import Metrics
from tradebot.server.web import make_admin_site, make_site
from tradebot.server.websocket import PremiumFactory
from tradebot.signals.names import DEFAULT_STRATEGY, shown_strategy, strategy_from_name
from tradebot.store import serverkeys
from tradebot.store.db import DEFAULT_DB_URL, Store
from tradebot.store.migrations import SchemaError
from tradebot.trading import failpoints
from tradebot.trading.alerts import DEFAULT_TTL, AlertQueue
from tradebot.trading.backends import Backends
from tradebot.trading.manager import SessionManager

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULTS = {
    "port": "tcp:8000",
    "admin-port": None,
    "db": DEFAULT_DB_URL,
    "broker": "paper",
    "strategy": DEFAULT_STRATEGY,
    "signal-interval": 60.0,
    "monitor-interval": 1.0,
    "db-retry-window": 60.0,
    "alert-ttl": DEFAULT_TTL,
    "log-format": "text",
    "max-message-size": 4096,
    "message-rate": 10.0,
    "message-burst": 20,
    "ping-interval": 30.0,
    "ping-timeout": 20.0,
    "handshake-timeout": 10.0,
    "slow-client-timeout": 60.0,
    "max-waiting-messages": 1000,
    "max-connections": 10000,
    "max-connections-per-account": 20,
    "max-connections-per-ip": 100,
    "max-handshakes-per-ip": 300,
    "allowed-origins": "",
    "trusted-proxies": "",
}
ENVIRONMENT = {"db": "TRADEBOT_DB", "broker": "TRADEBOT_BROKER"}
_INTERVALS = (
    "signal-interval", "monitor-interval", "db-retry-window", "alert-ttl", "message-rate", "ping-interval",
    "ping-timeout", "handshake-timeout", "slow-client-timeout",
)
_COUNTS = (
    "max-message-size", "message-burst", "max-connections", "max-connections-per-account",
    "max-connections-per-ip", "max-handshakes-per-ip", "max-waiting-messages",
)
LOG_FORMATS = ("text", "json")


class Options(usage.Options):
    """The options of ``twistd tradebot``."""

    synopsis = "[options]"
    longdesc = "Run the tradebot auto-trading server and its websocket API."
    optParameters = [
        ["config", "c", None, "A TOML file holding any of these options (without the --)."],
        ["port", "p", None, f"Twisted endpoint to listen on [default: {DEFAULTS['port']}]."],
        ["db", None, None, f"SQLAlchemy database URL (env TRADEBOT_DB) [default: {DEFAULTS['db']}]."],
        ["broker", None, None, "Broker URL (env TRADEBOT_BROKER) [default: paper]."],
        ["strategy", None, None, "Signal strategy: ma_cross, rsi_reversal, bollinger_breakout, or http:url=URL "
         f"(an HTTP signal provider) [default: {DEFAULTS['strategy']}]."],
        ["signal-interval", None, None, "Seconds between signal checks [default: 60]."],
        ["alert-ttl", None, None, "Seconds a webhook alert stays valid for its account's next check [default: 300]."],
        ["monitor-interval", None, None, "Seconds between open-trade reports [default: 1]."],
        ["db-retry-window", None, None, "Seconds a locked or unreachable database is retried before trading pauses [default: 60]."],
        ["admin-port", None, None, "Endpoint for /health and /metrics alone [default: served on --port]."],
        ["log-format", None, None, "Log lines as 'text' or 'json' (one object per line) [default: text]."],
        ["max-message-size", None, None, "Largest client frame or message, bytes [default: 4096]."],
        ["message-rate", None, None, "Client messages a second, on average [default: 10]."],
        ["message-burst", None, None, "Client messages in a burst [default: 20]."],
        ["ping-interval", None, None, "Seconds between websocket pings [default: 30]."],
        ["ping-timeout", None, None, "Seconds a ping may wait for its pong [default: 20]."],
        ["handshake-timeout", None, None, "Seconds a client has to send its request (the websocket handshake) [default: 10]."],
        ["slow-client-timeout", None, None, "Seconds a client may stay behind on its messages before it is closed [default: 60]."],
        ["max-waiting-messages", None, None, "Messages held back for a client behind; past it, it is closed [default: 1000]."],
        ["max-connections", None, None, "Open websockets in all; past it, HTTP 503 [default: 10000]."],
        ["max-connections-per-account", None, None, "Open websockets of one account; past it, 429 [default: 20]."],
        ["max-connections-per-ip", None, None, "Open websockets from one address; past it, 429 [default: 100]."],
        ["max-handshakes-per-ip", None, None, "Handshakes a minute from one address; past it, 429 [default: 300]."],
        ["allowed-origins", None, None, "Comma-separated Origins a browser may connect from [default: any]."],
        ["trusted-proxies", None, None, "Comma-separated proxy addresses whose X-Forwarded-For is believed [default: none]."],
    ]

    def postOptions(self):
        """Merge the sources and check every value; `UsageError` on bad input."""
        from_file = _read_config(self["config"]) if self["config"] else {}
        unknown = set(from_file) - set(DEFAULTS)
        if unknown:
            raise usage.UsageError(f"unknown option(s) in {self['config']}: {', '.join(sorted(unknown))}")
        for name, default in DEFAULTS.items():
            value = self[name]
            if value is None and name in ENVIRONMENT:
                value = os.environ.get(ENVIRONMENT[name]) or None
            if value is None:
                value = from_file.get(name, default)
            self[name] = value
        for name in _INTERVALS:
            self[name] = _positive_seconds(name, self[name])
        for name in _COUNTS:
            self[name] = _positive_count(name, self[name])
        if self["log-format"] not in LOG_FORMATS:
            raise usage.UsageError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {self['log-format']!r}")
        if self["log-format"] == "json" and self.parent is not None:
            # twistd's own --logger option, which twistd then imports
            self.parent["logger"] = "tradebot.server.logs.json_observer"
        try:
            strategy_from_name(str(self["strategy"]))
        except ValueError as e:
            raise usage.UsageError(str(e))
        try:
            check_url(str(self["broker"]))
        except ValueError as e:
            raise usage.UsageError(f"--broker: {e}")


def _read_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"cannot read config file {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"config file {path} is not valid TOML: {e}")


def _positive_count(name: str, value) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name} must be a whole number, not {value!r}")
    if count < 1 or count != float(value):
        raise usage.UsageError(f"--{name} must be a whole number from 1, not {value!r}")
    return count


def _positive_seconds(name: str, value) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name} must be a number of seconds, not {value!r}")
    if not seconds > 0:
        raise usage.UsageError(f"--{name} must be more than 0 seconds")
    return seconds


class PlanCache:
    """Loads each money-management plan once; call it with a plan name or path."""

    def __init__(self):
        self._plans = {}

    def __call__(self, name: str):
        plan = self._plans.get(name)
        if plan is None:
            plan = self._plans[name] = load_plan(name)
        return plan


class TradebotService(MultiService):
    """The whole server: store, broker backend, sessions, then the listener,
    started in that order and stopped in reverse."""

    _log = Logger()

    def __init__(self, config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.failpoints = failpoints.armed()  # ValueError on a misspelt one
        self.metrics = Metrics()
        self.store = Store(config["db"], reactor, metrics=self.metrics, retry_window=config["db-retry-window"])
        self.backend = backend_from_url(config["broker"], store=self.store, reactor=reactor)
        self.backends = Backends(
            self.backend,
            reactor,
            store=self.store,
            market_max_age=min(1.0, config["monitor-interval"]),
            metrics=self.metrics,
        )
        self.factory = PremiumFactory(
            self.store,
            None,
            reactor,
            max_message_size=config["max-message-size"],
            message_rate=config["message-rate"],
            message_burst=config["message-burst"],
            auto_ping_interval=config["ping-interval"],
            auto_ping_timeout=config["ping-timeout"],
            open_handshake_timeout=config["handshake-timeout"],
            slow_client_timeout=config["slow-client-timeout"],
            max_waiting=config["max-waiting-messages"],
            limits=Limits(
                max_connections=config["max-connections"],
                per_account=config["max-connections-per-account"],
                per_ip=config["max-connections-per-ip"],
                handshakes_per_ip_per_minute=config["max-handshakes-per-ip"],
                trusted_proxies=parse_addresses(config["trusted-proxies"]),
            ),
            allowed_origins=parse_addresses(config["allowed-origins"]),
        )
        self.strategy = strategy_from_name(config["strategy"], reactor=reactor)
        self.alerts = AlertQueue(self.store, reactor, ttl=config["alert-ttl"])
        self.sessions = SessionManager(
            self.store,
            self.backends,
            self.strategy,
            PlanCache(),
            reactor,
            config["signal-interval"],
            config["monitor-interval"],
            encode=self.factory.prepare,
            metrics=self.metrics,
            alerts=self.alerts,
        )
        self.factory.sessions = self.sessions
        self.metrics.watch(lambda: len(self.factory.connections), self.sessions)
        self.metrics.watch_brokers(self.backends)
        health = HealthCheck(self.store, self.backends, reactor, sessions=self.sessions)
        self.endpoint = endpoints.serverFromString(reactor, config["port"])
        # on the public port, /health tells the status alone and /metrics is
        # refused, but to the operator's admin token
        self.site = make_site(self.factory, health=health, metrics=self.metrics, store=self.store, alerts=self.alerts)
        if config.get("admin-port"):
            self.admin_endpoint = endpoints.serverFromString(reactor, config["admin-port"])
            self.admin_site = make_admin_site(health, self.metrics, head_timeout=config["handshake-timeout"])
        else:
            self.admin_endpoint = self.admin_site = None
        self.admin_port = None
        self.port = None
        self.started = defer.Deferred()

    def startService(self):
        """Start everything; `started` fires once the port listens."""
        MultiService.startService(self)
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._start_failed)
        d.chainDeferred(self.started)

    async def _start(self):
        if self.failpoints:
            self._log.warn(
                "fail points armed ({env}): the server kills itself at {points}",
                env=failpoints.ENVIRONMENT,
                points=", ".join(sorted(self.failpoints)),
            )
        await self.store.start()
        await self.alerts.start()
        self.backends.name_key = await serverkeys.broker_name_key(self.store)
        await self.backends.start(await self.store.accounts_with_own_broker())
        self.sessions.setServiceParent(self)
        await self.sessions.ready
        self.metrics.start_lag_probe(self.reactor)
        self.factory.start_token_checks()
        if self.admin_endpoint is not None:
            self.admin_port = await self.admin_endpoint.listen(self.admin_site)
        self.port = port = await self.endpoint.listen(self.site)
        speed = getattr(self.backend, "speed", 1)
        self._log.info(
            "tradebot listening on {port} ({address}): broker {broker}, strategy {strategy}, "
            "signals every {signal}s, reports every {monitor}s",
            port=self.config["port"],
            address=_address(port),
            broker=self.backend.description(),
            strategy=shown_strategy(self.config["strategy"]),
            signal=self.config["signal-interval"],
            monitor=self.config["monitor-interval"],
        )
        if speed != 1:
            self._log.info(
                "the paper market runs {speed}x faster than real time (a demo setting)", speed=speed
            )
        return port

    def _start_failed(self, failure):
        if failure.check(SchemaError):  # the message says what to do: no traceback
            self._log.error("tradebot could not start: {reason}", reason=failure.getErrorMessage())
        else:
            self._log.failure("tradebot could not start", failure)
        if self.reactor.running:
            # twistd exits 0 whatever happened; a service manager must see a failure
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
            self.reactor.stop()
        return failure

    @defer.inlineCallbacks
    def stopService(self):
        """Stop listening, stop the sessions, save the broker, close the store."""
        self.running = 0
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        if self.admin_port is not None:
            yield self.admin_port.stopListening()
            self.admin_port = None
        self.metrics.stop()
        self.factory.stop_token_checks()
        yield self.factory.close_all()
        if self.sessions.running:
            # not through disownServiceParent: a parent that has stopped running
            # (above) detaches its child without stopping it
            yield self.sessions.stopService()
        if self.sessions.parent is self:
            self.sessions.disownServiceParent()
        yield self.backends.stop()
        close = getattr(self.strategy, "close", None)  # an HTTP provider's kept-alive connections
        if close is not None:
            yield close()
        yield self.store.stop()


def _exit_failed() -> None:
    """End the process with status 1, once the reactor has shut down."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _address(port) -> str:
    host = port.getHost()
    return f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}"


def makeService(config, reactor=None):
    """The service ``twistd tradebot`` runs."""
    if reactor is None:
        from twisted.internet import reactor
    try:
        return TradebotService(config, reactor)
    except (ValueError, PlanError) as e:
        raise usage.UsageError(str(e))

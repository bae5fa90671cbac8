"""
The registry of brokers by URL: which backend a broker URL names, built or
only checked. ``paper`` is the simulated market (`tradebot.brokers.paper`),
``mt5`` and ``mt5linux`` a MetaTrader 5 terminal (`tradebot.brokers.mt5`).
"""

from tradebot.broker import BrokerBackend, BrokerURL

#: The broker URL schemes `backend_from_url` knows.
SCHEMES = ("paper", "mt5", "mt5linux")


def check_url(url: str) -> None:
    """Raise ValueError, naming the problem, unless `url` is a broker URL
    `backend_from_url` accepts. Builds nothing and starts nothing."""
    parsed = BrokerURL.parse(url)
    if parsed.scheme == "paper":
        from tradebot.brokers.paper import PaperBackend

        PaperBackend.from_url(parsed, reactor=_CHECK_ONLY)
    elif parsed.scheme in ("mt5", "mt5linux"):
        from tradebot.brokers.mt5.settings import settings_from_url

        settings_from_url(parsed)
    else:
        raise ValueError(f"unknown broker URL scheme {parsed.scheme!r} (known: {', '.join(SCHEMES)})")


#: Stands in for a reactor where a backend is built only to check its URL.
_CHECK_ONLY = object()


def backend_from_url(url: str, store=None, reactor=None) -> BrokerBackend:
    """Build the backend a broker URL names. `store` persists simulated
    accounts; `reactor` provides the clock. Raises ValueError for an unknown
    scheme or a malformed parameter."""
    parsed = BrokerURL.parse(url)
    if parsed.scheme == "paper":
        from tradebot.brokers.paper import PaperBackend

        return PaperBackend.from_url(parsed, store=store, reactor=reactor)
    if parsed.scheme in ("mt5", "mt5linux"):
        from tradebot.brokers.mt5.backend import backend_from_url as mt5_backend

        return mt5_backend(parsed, reactor=reactor)
    raise ValueError(f"unknown broker URL scheme {parsed.scheme!r} (known: {', '.join(SCHEMES)})")

"""
What the server keeps for itself in the ``server_settings`` table: the hash of
the operator's admin token, and the key its broker names are derived with.

**The admin token** (``tradebot admin-token``) is the operator's credential on
the public port: with ``Authorization: Bearer TOKEN``, ``/health`` gives its
details and ``/metrics`` answers (both are open, without it, only on
``--admin-port``). Like an account token it carries 192 random bits, is
printed once and stored only as its hash; a new one replaces the old.

**Broker names.** Logs, ``/health`` and ``/metrics`` name an MT5 terminal by
an opaque, stable name, never by its login, server, path or address: the
``name=`` its URL gives, else ``mt5-`` and 8 hex digits of an HMAC of the
terminal's identity under a random key made once per database. Without the
key (a login number has few enough digits to guess from a plain hash) the
name tells nothing; with the database, the operator maps it back
(``tradebot account show``).
"""

import hashlib
import hmac
import secrets
import time
from typing import Callable, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tradebot.store.schema import server_settings
from tradebot.store.tokens import hash_token

#: The names of the values kept.
ADMIN_TOKEN_HASH = "admin_token_hash"
BROKER_NAME_KEY = "broker_name_key"


def thd_setting(conn, name: str) -> Optional[str]:
    """The value kept under `name`, or None."""
    return conn.execute(sa.select(server_settings.c.value).where(server_settings.c.name == name)).scalar()


def thd_set_setting(conn, name: str, value: str, now: float) -> None:
    """Keep `value` under `name`, replacing what was there."""
    conn.execute(server_settings.delete().where(server_settings.c.name == name))
    conn.execute(server_settings.insert().values(name=name, value=value, updated_at=now))


def thd_setting_or_new(conn, name: str, make: Callable[[], str], now: float) -> str:
    """The value kept under `name`; if there is none, ``make()`` is kept and
    returned. Two processes asking at once get the same value (the second
    insert does nothing)."""
    dialect = conn.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    conn.execute(
        insert(server_settings).values(name=name, value=make(), updated_at=now).on_conflict_do_nothing(
            index_elements=["name"]
        )
    )
    return thd_setting(conn, name)


def new_name_key() -> str:
    """A fresh broker-name key, as kept (hex)."""
    return secrets.token_hex(32)


def broker_name_key(store):
    """The database's broker-name key (bytes), made on first use; a
    Deferred with a `Store`, the value with a `SyncStore`."""
    result = store.run(thd_setting_or_new, BROKER_NAME_KEY, new_name_key, time.time())
    if hasattr(result, "addCallback"):
        return result.addCallback(bytes.fromhex)
    return bytes.fromhex(result)


def broker_name(identity: str, key: bytes, prefix: str = "mt5") -> str:
    """The opaque name of the terminal whose identity is `identity`."""
    return f"{prefix}-{hmac.new(key, identity.encode('utf-8'), hashlib.sha256).hexdigest()[:8]}"


def thd_set_admin_token(conn, token: str, now: float) -> None:
    """Make `token` the admin token (its hash is kept), replacing any other."""
    thd_set_setting(conn, ADMIN_TOKEN_HASH, hash_token(token), now)


def thd_admin_token_hash(conn) -> Optional[str]:
    """The kept hash of the admin token, or None if none was made."""
    return thd_setting(conn, ADMIN_TOKEN_HASH)

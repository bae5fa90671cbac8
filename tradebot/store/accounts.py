"""
The accounts' ``thd_*`` operations: add, look up (by token hash, name, id),
change, rotate tokens, re-encrypt stored broker passwords, and the accounts a
server resumes at start.
"""

from decimal import Decimal
from typing import List, Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tradebot.store import records
from tradebot.store.engine import StoreError
from tradebot.store.records import Account
from tradebot.store.rows import DuplicateAccount, UnknownAccount, _account, _one_account
from tradebot.store.schema import accounts, trades


def thd_add_account(
    conn, name, symbols, balance, plan, max_open_trades, always_on, token_hash, now, broker=None,
    broker_password_encrypted=None,
) -> Account:
    """Create an account; raises `DuplicateAccount`. `broker_password_encrypted`
    is already encrypted: the store never sees a plain password."""
    if conn.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).first():
        raise DuplicateAccount(f"an account named {name!r} exists already")
    try:
        result = conn.execute(
            accounts.insert().values(
                name=name,
                token_hash=token_hash,
                symbols=",".join(symbols),
                plan=plan,
                phase=1,
                step=1,
                balance=Decimal(balance),
                max_open_trades=max_open_trades,
                always_on=always_on,
                created_at=now,
                broker=broker,
                broker_password_encrypted=broker_password_encrypted,
            )
        )
    except IntegrityError:
        raise DuplicateAccount(f"an account named {name!r} exists already")
    return _one_account(conn, accounts.c.id == result.inserted_primary_key[0])


def thd_account_by_token_hash(conn, token_hash: str) -> Optional[Account]:
    """The account whose live token hashes to `token_hash`, or None."""
    return _one_account(conn, accounts.c.token_hash == token_hash)


def thd_account_by_name(conn, name: str) -> Optional[Account]:
    """The account called `name`, or None."""
    return _one_account(conn, accounts.c.name == name)


def thd_account_by_id(conn, account_id: int) -> Optional[Account]:
    """The account with this id, or None."""
    return _one_account(conn, accounts.c.id == account_id)


def thd_list_accounts(conn) -> List[Account]:
    """Every account, by name."""
    return [_account(r) for r in conn.execute(sa.select(accounts).order_by(accounts.c.name))]


def thd_set_token_hash(conn, name: str, token_hash: Optional[str]) -> Account:
    """Replace an account's token hash (None revokes); raises `UnknownAccount`."""
    result = conn.execute(
        accounts.update().where(accounts.c.name == name).values(token_hash=token_hash)
    )
    if result.rowcount == 0:
        raise UnknownAccount(f"no account named {name!r}")
    return thd_account_by_name(conn, name)


_SETTABLE = {"symbols", "plan", "max_open_trades", "always_on", "broker", "broker_password_encrypted"}


def thd_update_account(conn, name: str, changes: dict) -> Account:
    """Change an account's settings (symbols, plan, max_open_trades,
    always_on, broker, broker_password_encrypted: already encrypted, or None
    to remove it); raises `UnknownAccount`."""
    unknown = set(changes) - _SETTABLE
    if unknown:
        raise StoreError(f"cannot set {', '.join(sorted(unknown))}")
    values = dict(changes)
    if "symbols" in values:
        values["symbols"] = ",".join(values["symbols"])
    if not values:
        account = thd_account_by_name(conn, name)
        if account is None:
            raise UnknownAccount(f"no account named {name!r}")
        return account
    result = conn.execute(accounts.update().where(accounts.c.name == name).values(**values))
    if result.rowcount == 0:
        raise UnknownAccount(f"no account named {name!r}")
    return thd_account_by_name(conn, name)


def thd_token_hashes(conn, account_ids) -> dict:
    """The live token hash of each account in `account_ids` (None once
    revoked; absent for an account that no longer exists)."""
    rows = conn.execute(sa.select(accounts.c.id, accounts.c.token_hash).where(accounts.c.id.in_(list(account_ids))))
    return {row.id: row.token_hash for row in rows}


def thd_reencrypt_broker_passwords(conn, reencrypt) -> List[str]:
    """Replace each stored broker password by ``reencrypt(name, token)``, all
    in one transaction; the names of the accounts, in order. An error raised
    by `reencrypt` changes nothing."""
    query = (
        sa.select(accounts.c.id, accounts.c.name, accounts.c.broker_password_encrypted)
        .where(accounts.c.broker_password_encrypted.is_not(None))
        .order_by(accounts.c.name)
    )
    names = []
    for row in conn.execute(query).all():
        token = reencrypt(row.name, row.broker_password_encrypted)
        conn.execute(accounts.update().where(accounts.c.id == row.id).values(broker_password_encrypted=token))
        names.append(row.name)
    return names


def thd_accounts_with_own_broker(conn) -> List[Account]:
    """Every account naming its own broker URL, by id."""
    rows = conn.execute(sa.select(accounts).where(accounts.c.broker.is_not(None)).order_by(accounts.c.id))
    return [_account(r) for r in rows]


def thd_accounts_to_resume(conn) -> List[Account]:
    """Accounts whose session must run from start-up: those with a live trade,
    and those set to trade while nobody is connected (unless revoked)."""
    live = sa.select(trades.c.account_id).where(trades.c.status.in_(records.LIVE_STATUSES))
    rows = conn.execute(
        sa.select(accounts)
        .where(
            sa.or_(
                accounts.c.id.in_(live),
                sa.and_(accounts.c.always_on.is_(True), accounts.c.token_hash.is_not(None)),
            )
        )
        .order_by(accounts.c.id)
    )
    return [_account(r) for r in rows]

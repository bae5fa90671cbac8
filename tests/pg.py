"""
The PostgreSQL server the tests run against, and throwaway databases on it.

The server is the one at ``TRADEBOT_TEST_PG`` (a SQLAlchemy URL; by default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). The database named in
that URL is only the maintenance database: it is connected to (with autocommit)
to create and drop the tests' own databases, and nothing is written into it.

Each test database is created from ``template0`` (so it starts with no table
at all, whatever ``template1`` holds) under a name no other run can have,
``tradebot_test_<pid>_<random>``, and is dropped by `drop_database`, which first
ends any connection still open on it.
"""

import functools
import os
import shutil
import subprocess
import uuid
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: The prefix of every database the tests create.
PREFIX = "tradebot_test_"


def server_url() -> sa.engine.URL:
    """The maintenance database's URL (``TRADEBOT_TEST_PG`` or the default)."""
    return make_url(os.environ.get("TRADEBOT_TEST_PG") or DEFAULT_SERVER_URL)


def server_name() -> str:
    """The server's URL for messages, without any password."""
    return server_url().render_as_string(hide_password=True)


@functools.lru_cache(maxsize=None)
def _admin_engine() -> sa.engine.Engine:
    return sa.create_engine(
        server_url(), isolation_level="AUTOCOMMIT", poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )


@functools.lru_cache(maxsize=None)
def unreachable() -> Optional[str]:
    """Why the server cannot be used, or None when it answers. Asked once a
    session: the answer is cached."""
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        return f"psycopg is not installed ({e})"
    try:
        with _admin_engine().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as e:  # any failure to connect means: no usable server
        return " ".join(str(getattr(e, "orig", None) or e).split())
    return None


def create_database() -> str:
    """Create a fresh, empty database; its SQLAlchemy URL (as a string, with
    any password in it, ready for ``--db``)."""
    name = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with _admin_engine().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    return server_url().set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """End every connection still open on the database at `url` and drop it."""
    name = make_url(url).database
    assert name.startswith(PREFIX), name
    with _admin_engine().connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
            {"name": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))


def dump(url: str) -> Optional[bytes]:
    """The whole database at `url` as ``pg_dump`` writes it (schema and every
    row, as text), or None when no working ``pg_dump`` is installed (an older
    one than the server refuses to dump it)."""
    if shutil.which("pg_dump") is None:
        return None
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    command = ["pg_dump", "--no-password", "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432)]
    if u.username:
        command += ["-U", u.username]
    result = subprocess.run(command + [u.database], env=env, capture_output=True, timeout=60)
    return result.stdout if result.returncode == 0 else None

"""
Schema migrations (Alembic), run from code: no ``alembic.ini`` needed.

`upgrade` brings a database to the code's schema: a new database is created by
the migrations, and one made before migrations existed (by the first releases,
which created tables directly) is recognised and stamped with the revision its
tables match first. `revision_of` tells where a database stands, and
`check_current` is what the server and the admin command run at start: a new
database is created, an older one is refused with the command to run.
"""

from typing import Optional

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

#: The tables of the first schema, which every database made before the
#: migrations has; and the revision each later pre-migration shape matches.
_FIRST_TABLES = {"accounts", "trades", "events", "broker_state"}


class SchemaError(Exception):
    """The database's schema is not the one this code runs on."""


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "tradebot.store:migrations")
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision: the schema this code runs on."""
    return ScriptDirectory.from_config(_config(None)).get_current_head()


def revision_of(connection) -> Optional[str]:
    """The database's revision: None for an empty database, ``"unversioned"``
    for tables made before the migrations existed."""
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is not None:
        return revision
    tables = set(sa.inspect(connection).get_table_names())
    return "unversioned" if tables & _FIRST_TABLES else None


def _stamp_unversioned(connection) -> None:
    """Record which revision a pre-migration database's tables match."""
    columns = {c["name"] for c in sa.inspect(connection).get_columns("accounts")}
    command.stamp(_config(connection), "0002" if "broker" in columns else "0001")


def upgrade(engine: sa.engine.Engine) -> str:
    """Bring the database to `head`, in one transaction per step; the
    revision it started from (None: it was empty)."""
    with engine.begin() as connection:
        start = revision_of(connection)
        if start == "unversioned":
            _stamp_unversioned(connection)
        command.upgrade(_config(connection), "head")
    return start


def check_current(engine: sa.engine.Engine, shown_url: str) -> None:
    """Create a new (empty) database; accept one at `head`; raise
    `SchemaError`, naming the command that upgrades it, for an older one,
    and for one newer than this code."""
    with engine.connect() as connection:
        revision = revision_of(connection)
    if revision is None:
        upgrade(engine)
        return
    newest = head()
    if revision == newest:
        return
    known = {s.revision for s in ScriptDirectory.from_config(_config(None)).walk_revisions()}
    if revision != "unversioned" and revision not in known:
        raise SchemaError(
            f"the database {shown_url} has schema revision {revision}, newer than this "
            f"tradebot knows ({newest}): run a newer tradebot"
        )
    raise SchemaError(
        f"the database {shown_url} has an older schema ({revision}; this tradebot needs {newest}): "
        f"run `tradebot --db '{shown_url}' db upgrade`"
    )

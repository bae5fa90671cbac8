"""
What a broker backend keeps in the store (the paper market and its accounts),
and the check write that tells the database takes writes again.
"""

import json

import sqlalchemy as sa

from tradebot.store.schema import broker_state

#: Where the check write (`thd_check_writes`) writes.
CHECK_BACKEND, CHECK_KEY = "tradebot", "write-check"


def thd_load_broker_state(conn, backend: str) -> dict:
    """Every document a broker backend saved, as {key: decoded JSON}."""
    rows = conn.execute(sa.select(broker_state).where(broker_state.c.backend == backend))
    return {r.key: json.loads(r.value) for r in rows}


def thd_save_broker_state(conn, backend: str, documents: dict) -> None:
    """Insert or replace a broker backend's documents, {key: JSON-able}."""
    for key, value in documents.items():
        text = json.dumps(value, sort_keys=True)
        result = conn.execute(
            broker_state.update()
            .where(broker_state.c.backend == backend, broker_state.c.key == key)
            .values(value=text)
        )
        if result.rowcount == 0:
            conn.execute(broker_state.insert().values(backend=backend, key=key, value=text))


def thd_check_writes(conn, now: float) -> None:
    """A write that always changes a row (the time of the check), so that it
    needs the space and the lock any other write needs."""
    thd_save_broker_state(conn, CHECK_BACKEND, {CHECK_KEY: {"checked_at": now}})

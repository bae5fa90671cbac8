"""Alembic's entry point: runs the migrations on the connection that
`tradebot.store.migrations` hands it (never on a URL of its own)."""

from alembic import context

from tradebot.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

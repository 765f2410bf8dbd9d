"""Alembic environment: mailer always passes the connection in (see store/engine.py)."""

from alembic import context

from mailer.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: runs on the connection handed in by ``state.db.upgrade_database``."""

from alembic import context

from state.models import SQLModel

target_metadata = SQLModel.metadata
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

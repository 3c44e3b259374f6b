"""Alembic environment: migrations run on the connection the Store hands over."""

from alembic import context

from aiflywheel.store import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` command line: build a connection from the ini's URL
    from sqlalchemy import create_engine

    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

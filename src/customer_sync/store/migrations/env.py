"""Alembic environment for the store: runs the migrations on the connection customer-sync hands in.

customer-sync configures Alembic from code (`customer_sync.store._alembic`), so there is no
alembic.ini. `open_store` passes its connection in `config.attributes["connection"]` and the
migrations run in that connection's transaction. To write a new migration against a scratch
store, from Python:

    from alembic import command
    from customer_sync.store._alembic import alembic_config
    config = alembic_config("sqlite:///scratch.db")  # open_store() it first, to migrate it
    command.revision(config, "why", autogenerate=True, rev_id="0002")

then edit the generated file by hand until it says exactly what you mean.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from customer_sync.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rewrites the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    """`alembic upgrade --sql`: print the SQL for a DBA instead of running it."""
    url = context.config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=bool(url and url.startswith("sqlite")),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use alembic_config(url)")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()

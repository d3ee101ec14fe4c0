"""Alembic environment: runs on the connection handed over by `database.upgrade`, or on
DATABASE_URL when invoked by the alembic command line."""

from alembic import context

from token_service import models  # noqa: F401 - registers the tables
from token_service.extensions import db

target_metadata = db.metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    import os

    from sqlalchemy import create_engine

    from token_service.config import Settings

    engine = create_engine(Settings.from_env(dict(os.environ)).database_url)
    with engine.begin() as conn:
        run_migrations(conn)

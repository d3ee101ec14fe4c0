"""The Alembic migrations build exactly the schema the models describe, on both backends, and
go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from token_service.database import alembic_config
from token_service.extensions import db


def test_migrations_match_models(base_app):
    with base_app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_downgrade_and_upgrade(tmp_path):
    from sqlalchemy import create_engine, inspect

    engine = create_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert "refresh_tokens" in inspect(engine).get_table_names()
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert inspect(engine).get_table_names() == ["alembic_version"]
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert "sessions" in inspect(engine).get_table_names()
    engine.dispose()

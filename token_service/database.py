"""Engine settings per backend and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def configure_engine(url: str, threads: int = 4) -> dict:
    """Engine options: SQLite gets a busy timeout. PostgreSQL connections are not pinged before
    use (a round trip per request): a dead one fails its request, which the view retries once
    on a fresh connection (see api/front.py), and the pool replaces them all. The pool holds
    one connection per slot of the worker (slots.py) for the ORM session, plus a few for
    bursts; each slot's hot-path connection is its own, outside the pool
    (oauth2/sessions/connections.py)."""
    if url.startswith("sqlite"):
        # A file database gets SQLAlchemy's QueuePool, one connection per thread at a time
        # (check_same_thread off): each request's transaction on its own connection.
        return {"connect_args": {"timeout": 10, "isolation_level": None}}
    return {"pool_size": max(5, threads), "max_overflow": 5, "pool_recycle": 1800}


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin_immediate(conn):
    # SQLite upgrades a read transaction to a write one only if nobody wrote in between, and
    # otherwise fails at once ("database is locked"). Taking the write lock at BEGIN makes
    # concurrent refreshes queue (busy timeout) instead of failing.
    # Straight on the driver: SQLAlchemy's statement layer would cost more than the BEGIN.
    if conn.dialect.name == "sqlite":
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")


def alembic_config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)

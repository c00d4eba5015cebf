"""Database URL resolution, engine creation and Alembic migrations for the registry."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from storage.errors import RegistryError
from storage.registry.schema import VERSION_TABLE

DATABASE_URL_ENV = "COMPEFT_DATABASE_URL"
HOME_ENV = "COMPEFT_HOME"
MIGRATIONS = "storage.registry:migrations"
#: Newest migration shipped (a test checks it equals Alembic's head); lets reads skip importing Alembic.
HEAD_REVISION = "0003"


def compeft_home() -> Path:
    """Directory for local state: ``COMPEFT_HOME`` or ``~/.compeft``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".compeft").expanduser()


def default_database_url() -> str:
    """The embedded SQLite database in :func:`compeft_home`."""
    return f"sqlite:///{compeft_home() / 'registry.db'}"


def resolve_database_url(explicit: str | None = None) -> str:
    """Database URL: explicit (``--database-url``) > ``COMPEFT_DATABASE_URL`` > embedded SQLite default."""
    return explicit or os.environ.get(DATABASE_URL_ENV) or default_database_url()


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def is_sqlite(url: str) -> bool:
    """True for sqlite:// URLs (the embedded database)."""
    return url.startswith("sqlite")


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets a parent directory, foreign keys, WAL and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise RegistryError(f"invalid database URL {redact_url(url)!r}: {err}") from err
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except (ArgumentError, ImportError) as err:
        raise RegistryError(f"cannot open database {redact_url(url)!r}: {err}") from err


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    import sqlite3

    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # lets readers run beside one writer
    except sqlite3.OperationalError:
        pass  # another process is switching the mode right now; WAL is an optimization, not a need
    # with WAL, commits survive a crash of the process; only a power loss can drop the last ones, and every row
    # is re-derived by the next run (idempotent writes), so no sync per commit (milliseconds per adapter)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


@contextmanager
def _migration_lock(engine: Engine):
    """Serialize migrations of one SQLite file across processes (SQLite DDL is not transactional here)."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{Path(database).expanduser()}.migrate.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on ``engine``'s database."""
    from alembic import command

    config = _alembic_config(engine)
    try:
        with _migration_lock(engine), engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as err:
        reason = err.args[0] if err.args else err
        raise RegistryError(f"migrating {redact_url(str(engine.url))} failed: {type(err).__name__}: {reason}") from err


def current_revision(engine: Engine) -> str | None:
    """The applied migration revision, or None for an empty database (plain SQL, no Alembic import)."""
    from sqlalchemy import inspect, text

    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def alembic_head_revision() -> str:
    """The head according to Alembic's script directory (slow import; used by tests and upgrade checks)."""
    from alembic.script import ScriptDirectory

    config = _alembic_config(create_engine("sqlite://"))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RegistryError("no registry migrations found in the storage package")
    return head


def head_revision() -> str:
    """The newest migration shipped with this package."""
    return HEAD_REVISION

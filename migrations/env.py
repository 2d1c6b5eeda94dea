"""Alembic environment: run by beatd.store.sql.migrate with a connection already in a transaction.

beatd.store.sql.migrate opens the connection, takes the migration lock and passes the
connection in `config.attributes["connection"]`; users need no alembic.ini.
"""

from __future__ import annotations

from alembic import context

from beatd.store.sql.engine import make_engine
from beatd.store.sql.tables import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # plain `alembic -x url=...` use, for developers
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass the database URL: alembic -x url=URL ...")
    engine = make_engine(url)
    with engine.connect() as conn, conn.begin():
        _run(conn)
    engine.dispose()

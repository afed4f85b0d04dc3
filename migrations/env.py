"""Alembic environment: migrations run on the engine that rnm opened (see rnmtd3.registry.engine)."""

from alembic import context
from sqlalchemy import text

from rnmtd3.registry.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # several first uses at once (`rnm queue` x 4) migrate in turn
            connection.execute(text("SELECT pg_advisory_xact_lock(7265676973747279)"))
        context.run_migrations()
    connection.commit()

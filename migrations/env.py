"""Alembic environment: migrations run on the engine that rnm opened (see rnmtd3.registry.engine)."""

from alembic import context

from rnmtd3.registry.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

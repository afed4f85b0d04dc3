"""wider pattern: runs.pattern from VARCHAR(16) to VARCHAR(64), for `unstructured:S` patterns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:45:00

`unstructured:0.875` has 18 characters, and PostgreSQL enforces a VARCHAR's length (SQLite does not, but its schema
says the same as the models). PostgreSQL widens the column in place. SQLite cannot change a column's type: the
table is rebuilt, and dropping the old `runs` (rnm always runs SQLite with foreign keys on, and a transaction cannot
turn them off) would cascade to every evaluation, statistic and attempt; so those rows are set aside in temporary
tables first and put back after, all in the migration's one transaction.

A downgrade on PostgreSQL fails while a run's pattern is longer than 16 characters: rnm before this revision could
not read those runs either.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

CHILDREN_AT_0004 = ("evaluations", "train_stats", "attempts")
"""The tables whose rows reference runs with ON DELETE CASCADE at this revision (frozen: later tables are not here)."""


def upgrade() -> None:
    _retype_pattern(sa.String(length=16), sa.String(length=64))


def downgrade() -> None:
    _retype_pattern(sa.String(length=64), sa.String(length=16))


def _retype_pattern(old: sa.String, new: sa.String) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for child in CHILDREN_AT_0004:
            op.execute(f"CREATE TEMP TABLE kept_{child} AS SELECT * FROM {child}")
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.alter_column('pattern', existing_type=old, type_=new, existing_nullable=False)
    if sqlite:
        for child in CHILDREN_AT_0004:
            op.execute(f"DELETE FROM {child}")  # emptied by the cascade, unless foreign keys were off
            op.execute(f"INSERT INTO {child} SELECT * FROM kept_{child}")
            op.execute(f"DROP TABLE kept_{child}")

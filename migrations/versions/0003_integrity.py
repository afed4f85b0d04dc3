"""integrity: database identity, per-attempt provenance, failure back-off, worker pid namespaces, and run hashes that
survive new keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:15:00

Run hashes used to cover every config key, so adding a key changed every hash and an old sweep re-queued after an
upgrade was queued a second time. From this revision a hash covers env, pattern, seed and the keys that differ from
their defaults; the stored hashes are recomputed here with the defaults as they stand at this revision (frozen
below: a later change to RunConfig must not change what this migration does). Two rows of an old database that
turn out to be the same config (queued twice across an upgrade) keep separate rows; the later one's hash gets a
suffix, so the unique constraint holds and a new queue matches the first.
"""
import hashlib
import json
import uuid

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

DEFAULTS_AT_0003 = {
    "steps": 1_000_000, "start_steps": 25_000, "batch_size": 256, "buffer_size": 1_000_000, "lr": 3e-4,
    "gamma": 0.99, "tau": 0.005, "expl_noise": 0.1, "policy_noise": 0.2, "noise_clip": 0.5, "policy_delay": 2,
    "hidden": [256, 256], "eval_interval": 5_000, "eval_episodes": 10, "checkpoint_interval": 50_000,
    "mask_interval": 5_000, "grad_mode": "masked", "srste_decay": 2e-4, "sparse_io": True, "precision": "fp32",
    "device": "cpu",
}


def identity_hash(config: dict) -> str:
    identity = {k: v for k, v in config.items() if k not in DEFAULTS_AT_0003 or v != DEFAULTS_AT_0003[k]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def upgrade() -> None:
    info = op.create_table('registry_info',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.bulk_insert(info, [{"key": "database_id", "value": uuid.uuid4().hex}])
    op.create_table('attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('worker_pid', sa.Integer(), nullable=True),
    sa.Column('rnm_version', sa.String(length=64), nullable=True),
    sa.Column('git_commit', sa.String(length=128), nullable=True),
    sa.Column('python', sa.String(length=64), nullable=True),
    sa.Column('torch', sa.String(length=64), nullable=True),
    sa.Column('gymnasium', sa.String(length=64), nullable=True),
    sa.Column('mujoco', sa.String(length=64), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('cpu', sa.String(length=255), nullable=True),
    sa.Column('threads', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.create_index('ix_attempts_run_id', ['run_id'], unique=False)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retry_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('transient_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('worker_ns', sa.String(length=64), nullable=True))

    conn = op.get_bind()
    runs = sa.table('runs', sa.column('id', sa.Integer), sa.column('config', sa.Text),
                    sa.column('config_hash', sa.String))
    seen: set[str] = set()
    for run_id, config in conn.execute(sa.select(runs.c.id, runs.c.config).order_by(runs.c.id)).all():
        new = identity_hash(json.loads(config))
        if new in seen:
            new = f"{new}-duplicate-{run_id}"
        seen.add(new)
        conn.execute(runs.update().where(runs.c.id == run_id).values(config_hash=new))


def downgrade() -> None:
    conn = op.get_bind()
    runs = sa.table('runs', sa.column('id', sa.Integer), sa.column('config', sa.Text),
                    sa.column('config_hash', sa.String))
    for run_id, config in conn.execute(sa.select(runs.c.id, runs.c.config)).all():
        full = hashlib.sha256(json.dumps(json.loads(config), sort_keys=True, separators=(",", ":")).encode())
        conn.execute(runs.update().where(runs.c.id == run_id).values(config_hash=full.hexdigest()[:32]))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('worker_ns')
        batch_op.drop_column('transient_failures')
        batch_op.drop_column('retry_at')
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_run_id')
    op.drop_table('attempts')
    op.drop_table('registry_info')

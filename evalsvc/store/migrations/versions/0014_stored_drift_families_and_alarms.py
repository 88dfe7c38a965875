"""drift: the watched families and their alarms are stored (an alarm is never recomputed at another level), an
acknowledgement names the alarm's run, and each metric point stores its per-case SD

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 09:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'drift_families',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=16), nullable=False),
        sa.Column('members', sa.JSON(), nullable=False),
        sa.Column('alpha', sa.Float(), nullable=False),
        sa.Column('warmup', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'drift_alarms',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('family_id', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sa.String(length=32), nullable=False),
        sa.Column('suite_version', sa.String(length=32), nullable=False),
        sa.Column('metric', sa.String(length=100), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('run_ts', sa.DateTime(timezone=True), nullable=False),
        sa.Column('direction', sa.String(length=8), nullable=False),
        sa.Column('statistic', sa.Float(), nullable=False),
        sa.Column('threshold', sa.Float(), nullable=False),
        sa.Column('level', sa.Float(), nullable=False),
        sa.Column('reference_mean', sa.Float(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['family_id'], ['drift_families.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('fingerprint', 'suite_version', 'metric', 'run_id', name='uq_drift_alarm'),
    )
    with op.batch_alter_table('drift_marks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.Integer(), nullable=True))
    with op.batch_alter_table('metric_points', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sd', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('metric_points', schema=None) as batch_op:
        batch_op.drop_column('sd')
    with op.batch_alter_table('drift_marks', schema=None) as batch_op:
        batch_op.drop_column('run_id')
    op.drop_table('drift_alarms')
    op.drop_table('drift_families')

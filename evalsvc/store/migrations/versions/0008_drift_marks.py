"""drift marks: acknowledged alarms and pinned reference windows of drift series

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'drift_marks',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('fingerprint', sa.String(length=32), nullable=False),
        sa.Column('suite_version', sa.String(length=32), nullable=False),
        sa.Column('metric', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('by', sa.String(length=200), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_drift_marks_series', 'drift_marks', ['fingerprint', 'suite_version', 'metric'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_drift_marks_series', table_name='drift_marks')
    op.drop_table('drift_marks')

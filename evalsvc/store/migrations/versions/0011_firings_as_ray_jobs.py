"""firings record the Ray Job that carries them (submission id, attempt)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('firings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submission_id', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('attempt', sa.Integer(), nullable=False, server_default='1'))
        batch_op.create_index('ix_firings_submission', ['submission_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('firings', schema=None) as batch_op:
        batch_op.drop_index('ix_firings_submission')
        batch_op.drop_column('attempt')
        batch_op.drop_column('submission_id')

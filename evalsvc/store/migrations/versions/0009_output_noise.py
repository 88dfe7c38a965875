"""runs record how many temperature-0 outputs moved against the previous run (the learned output noise)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 23:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outputs_compared', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('outputs_moved', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('outputs_moved')
        batch_op.drop_column('outputs_compared')

"""runs keep their self-divergence from the previous run of their series, for upstream change detection

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 12:30:00

The mean top-k KL of a temperature-0 run's log-probabilities from the previous run of the same fingerprint and suite
version, and how many cases it averages (docs/divergence.md, "Self-divergence"). Runs stored before this revision, or
without log-probabilities, have none.
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('self_kld', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('self_kld_cases', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('self_kld_cases')
        batch_op.drop_column('self_kld')

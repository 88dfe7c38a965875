"""case results keep their answers' top log-probabilities, for the divergence from the baseline

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 10:10:00

One JSON value per case result: per generated token its text, its log-probability and the top-k alternatives
(docs/divergence.md). Rows stored before this revision have none.
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('case_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('logprobs', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('case_results', schema=None) as batch_op:
        batch_op.drop_column('logprobs')

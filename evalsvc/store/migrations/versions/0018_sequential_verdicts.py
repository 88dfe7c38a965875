"""stored verdicts say where a sequential gate stopped

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 12:50:00

Every row of a sequential gate's report keeps its stop: the look, the planned looks, the cases asked of the total, the
seed and slot of its case order, whether it stopped early and the requests that saved (docs/gate.md, "Sequential
gate"); the dashboard's Compare page marks the verdict with it. Fixed comparisons, and rows stored before this
revision, have none.
"""

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sequential', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.drop_column('sequential')

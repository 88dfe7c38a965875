"""schedules as plain rows (paused, owed-since) instead of APScheduler's pickled job store

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('schedule_states',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('cron', sa.String(length=200), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    # APScheduler's job table held pickles that `serve` unpickled: anyone who could write the store could run code on
    # the scheduler host. The jobs are rebuilt from evalsvc.yaml now; a paused schedule must be paused again.
    op.execute("DROP TABLE IF EXISTS apscheduler_jobs")


def downgrade() -> None:
    op.drop_table('schedule_states')

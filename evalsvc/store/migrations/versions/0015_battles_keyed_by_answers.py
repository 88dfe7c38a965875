"""arena battles record a hash of the two answers they judged, so a battle whose answers changed is judged again

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 10:00:00

An endpoint variant's answers can change under one fingerprint (the checkpoint behind its URL was swapped); the arena
kept the battles it had judged on the old answers. Battles stored before this revision have no hash: they are judged
again the next time their pair meets.
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('battles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answers_hash', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('battles', schema=None) as batch_op:
        batch_op.drop_column('answers_hash')

"""the store's own identity (a random id written once), and every Ray Job attempt of a firing

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 09:00:00
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table('store_identity',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(table, [{'id': uuid.uuid4().hex}])
    with op.batch_alter_table('firings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('firings', schema=None) as batch_op:
        batch_op.drop_column('attempts')
    op.drop_table('store_identity')

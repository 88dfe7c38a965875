"""teacher-forced divergence per case: the candidate run scored on the baseline run's answers

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 15:40:00

A gate whose candidate scores a given continuation (vLLM's prompt_logprobs) scores it on every token of the
baseline's stored answers while its server is up, and keeps each case's result keyed by (candidate run, baseline run,
case), so a later report or the dashboard reads it without asking again and a re-run asks only what is missing
(docs/divergence.md, "Teacher-forced mode").
"""

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'forced_cases',
        sa.Column('candidate_run_id', sa.Integer(), nullable=False),
        sa.Column('baseline_run_id', sa.Integer(), nullable=False),
        sa.Column('case_id', sa.String(length=200), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('kld', sa.Float(), nullable=True),
        sa.Column('top1_agreement', sa.Float(), nullable=True),
        sa.Column('delta_p', sa.Float(), nullable=True),
        sa.Column('same_output', sa.Integer(), nullable=True),
        sa.Column('first_divergence', sa.Integer(), nullable=True),
        sa.Column('positions', sa.Integer(), nullable=True),
        sa.Column('baseline_token', sa.Text(), nullable=True),
        sa.Column('candidate_token', sa.Text(), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('candidate_run_id', 'baseline_run_id', 'case_id'),
    )


def downgrade() -> None:
    op.drop_table('forced_cases')

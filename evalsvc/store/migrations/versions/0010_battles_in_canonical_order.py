"""arena battles in one canonical order per pair: duplicates judged in the other order are merged

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 02:30:00

A pair of variants used to be stored in the order the variants were named (`-v`), so naming them the other way
round judged and stored the same pair on the same case again, and the fit counted it twice. A pair is now always
(fingerprint, name)-ordered. This keeps one battle per case, pair, judge identity and rubric (the canonical one if
it exists, else the earliest with an outcome, else the earliest) and flips a kept battle stored the other way round:
a and b swap, the outcome becomes 1 - outcome, and the two verdicts swap places with their A/B labels swapped.
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

battles = sa.table(
    'battles', sa.column('id', sa.Integer), sa.column('suite_version', sa.String), sa.column('case_id', sa.String),
    sa.column('variant_a', sa.String), sa.column('fingerprint_a', sa.String), sa.column('variant_b', sa.String),
    sa.column('fingerprint_b', sa.String), sa.column('judge_fingerprint', sa.String), sa.column('template_hash', sa.String),
    sa.column('verdict_ab', sa.String), sa.column('verdict_ba', sa.String), sa.column('outcome', sa.Float),
    sa.column('len_a', sa.Integer), sa.column('len_b', sa.Integer))

SWAPPED = {"A": "B", "B": "A"}


def _canonical(row) -> bool:
    return (row.fingerprint_a, row.variant_a) <= (row.fingerprint_b, row.variant_b)


def upgrade() -> None:
    bind = op.get_bind()
    groups: dict[tuple, list] = {}
    for row in bind.execute(sa.select(battles).order_by(battles.c.id)):
        pair = tuple(sorted([(row.fingerprint_a, row.variant_a), (row.fingerprint_b, row.variant_b)]))
        groups.setdefault((row.suite_version, row.case_id, row.judge_fingerprint, row.template_hash, pair), []).append(row)
    drop, flip = [], []
    for rows in groups.values():
        keep = min(rows, key=lambda r: (not _canonical(r), r.outcome is None, r.id))
        drop += [r.id for r in rows if r.id != keep.id]
        if not _canonical(keep):
            flip.append(keep)
    for start in range(0, len(drop), 500):
        bind.execute(sa.delete(battles).where(battles.c.id.in_(drop[start:start + 500])))
    for r in flip:
        bind.execute(sa.update(battles).where(battles.c.id == r.id).values(
            variant_a=r.variant_b, fingerprint_a=r.fingerprint_b, variant_b=r.variant_a, fingerprint_b=r.fingerprint_a,
            verdict_ab=SWAPPED.get(r.verdict_ba, r.verdict_ba), verdict_ba=SWAPPED.get(r.verdict_ab, r.verdict_ab),
            outcome=None if r.outcome is None else 1.0 - r.outcome, len_a=r.len_b, len_b=r.len_a))


def downgrade() -> None:
    pass  # merged duplicates are not restored: they were the same battles counted twice

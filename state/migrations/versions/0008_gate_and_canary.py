"""A version's gate results and its canary (spec.adapter(s)[].rollout), and a decision on a
canary asked through the API (promote or abort), kept apart from what the reconciler writes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapter_version") as batch:
        batch.add_column(sa.Column("gate", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("canary", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("canary_decision", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapter_version") as batch:
        batch.drop_column("canary_decision")
        batch.drop_column("canary")
        batch.drop_column("gate")

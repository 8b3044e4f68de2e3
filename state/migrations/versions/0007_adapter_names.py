"""Adapter versions belong to one of a deployment's adapters, by name (spec.adapters).

Rows written before are versions of the one adapter of spec.adapter, which is served under the
deployment's name: that is their adapter.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapter_version") as batch:
        batch.add_column(sa.Column("adapter", sa.String(64), nullable=False, server_default=""))
    op.execute("UPDATE adapter_version SET adapter = deployment_name WHERE adapter = ''")


def downgrade() -> None:
    with op.batch_alter_table("adapter_version") as batch:
        batch.drop_column("adapter")

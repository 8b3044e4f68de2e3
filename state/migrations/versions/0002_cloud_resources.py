"""Cloud resources: what a provider remembers across restarts (ownership, operations in flight).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cloud_resource",
        sa.Column("deployment_uid", sa.String(36), primary_key=True),
        sa.Column("resource_id", sa.String(512), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("created", sa.Boolean(), nullable=False),
        sa.Column("operation", sa.String(16), nullable=True),
        sa.Column("continuation_token", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cloud_resource")

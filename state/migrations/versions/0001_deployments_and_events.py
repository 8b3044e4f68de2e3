"""Deployments, their labels, and events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inference_deployment",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("uid", sa.String(36), nullable=False, unique=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("deletion_timestamp", UTCDateTime(), nullable=True),
        sa.Column("finalizers", sa.JSON(), nullable=False),
    )
    op.create_table(
        "deployment_label",
        sa.Column(
            "deployment_name",
            sa.String(63),
            sa.ForeignKey("inference_deployment.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(317), primary_key=True),
        sa.Column("value", sa.String(63), nullable=False),
    )
    op.create_index("ix_deployment_label_key_value", "deployment_label", ["key", "value"])
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("deployment_uid", sa.String(36), nullable=False),
        sa.Column("deployment_name", sa.String(63), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_timestamp", UTCDateTime(), nullable=False),
        sa.Column("last_timestamp", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_event_deployment_uid_id", "event", ["deployment_uid", "id"])


def downgrade() -> None:
    op.drop_index("ix_event_deployment_uid_id", table_name="event")
    op.drop_table("event")
    op.drop_index("ix_deployment_label_key_value", table_name="deployment_label")
    op.drop_table("deployment_label")
    op.drop_table("inference_deployment")

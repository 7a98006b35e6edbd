"""Experiments register the folder they ran in: one store is shared by many runs (long-term knowledge), and a run
resumes only the experiment it left in its own folder (another folder with the same config is a new replicate).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("run_dir", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("run_dir")

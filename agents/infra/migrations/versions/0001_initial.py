"""The knowledge store as it was before migrations: experiments, trials, rollouts, shifts, designs.

A store created by ``create_all`` before Alembic was added has exactly these tables; opening one stamps it with
this revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = 200  # agents.infra.store.NAME_LENGTH when this revision was written


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def _experiment() -> sa.Column:
    return sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _created(),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_experiments_name", "experiments", ["name"])
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        _experiment(),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("controller", sa.String(NAME), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("regime", sa.JSON, nullable=False),
        sa.Column("regime_key", sa.String(NAME), nullable=False),
        sa.Column("inner", sa.JSON, nullable=False),
        sa.Column("outer", sa.JSON, nullable=False),
        sa.Column("reward", sa.Float, nullable=False),
        _created(),
        sa.UniqueConstraint("experiment_id", "step", name="uq_trials_experiment_step"),
    )
    op.create_index("ix_trials_agent", "trials", ["agent"])
    op.create_index("ix_trials_regime_key", "trials", ["regime_key"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True),
        _experiment(),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("candidate_config", sa.JSON, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("effect", sa.Float, nullable=True),
        sa.Column("ci_low", sa.Float, nullable=True),
        sa.Column("ci_high", sa.Float, nullable=True),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("n_incumbent", sa.Integer, nullable=False),
        sa.Column("n_candidate", sa.Integer, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        _created(),
        sa.UniqueConstraint("experiment_id", "step", "agent", name="uq_rollouts_experiment_step_agent"),
    )
    op.create_index("ix_rollouts_agent", "rollouts", ["agent"])
    op.create_table(
        "shifts",
        sa.Column("id", sa.Integer, primary_key=True),
        _experiment(),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(NAME), nullable=False),
        sa.Column("detected_at_step", sa.Integer, nullable=True),
        _created(),
        sa.UniqueConstraint("experiment_id", "day", "kind", name="uq_shifts_experiment_day_kind"),
    )
    op.create_table(
        "designs",
        sa.Column("id", sa.Integer, primary_key=True),
        _experiment(),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("route", sa.String(NAME), nullable=False),
        sa.Column("valid", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("reward", sa.Float, nullable=True),
        _created(),
    )
    op.create_index("ix_designs_agent", "designs", ["agent"])


def downgrade() -> None:
    for table in ("designs", "shifts", "rollouts", "trials", "experiments"):
        op.drop_table(table)

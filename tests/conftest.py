"""Test-suite set-up: a non-interactive matplotlib backend and the registered env ids."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import envs  # noqa: E402,F401  (registers the agentic-rs/* ids)

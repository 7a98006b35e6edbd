"""Experiments: entry points, baselines, plots and reports."""

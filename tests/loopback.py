"""Moved to tests/helpers.py (``free_port``, ``run_workers``); kept until test_stats_examples.py and
test_pipeline_multiscan.py import them from there."""

from tests.helpers import free_port, run_workers

__all__ = ["free_port", "run_workers"]

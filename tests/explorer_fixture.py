"""Moved to tests/helpers.py (``build_results``, ``EXPLORER_EXAMPLES``); kept until test_explorer*.py import it
from there."""

from tests.helpers import EXPLORER_EXAMPLES as EXAMPLES
from tests.helpers import build_results

__all__ = ["EXAMPLES", "build_results"]

"""Moved to tests/helpers.py (``TINY_MEL``, ``tone_corpus``); kept until test_train.py imports them from there."""

from tests.helpers import TINY_MEL, tone_corpus

__all__ = ["TINY_MEL", "tone_corpus"]

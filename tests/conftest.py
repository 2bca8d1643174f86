"""Test set-up: 8 virtual CPU devices before JAX starts, so sharding tests see a real mesh."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

import pytest  # noqa: E402  (after the environment above: nothing may import JAX before it is set)


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> str:
    """The manifest of the one tiny synthetic corpus (tests/helpers.py ``TINY_CORPUS``), made once per session."""
    from tests.helpers import make_tiny_corpus

    return make_tiny_corpus(str(tmp_path_factory.mktemp("tiny_corpus")))


@pytest.fixture(scope="session")
def tiny_corpus(tiny_manifest):
    """The tiny corpus's utterances (read-only: tests that change utterances copy them first)."""
    from jaxneurons.data import read_manifest

    return read_manifest(tiny_manifest)

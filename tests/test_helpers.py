"""The suite's one way to run a child process (tests/helpers.py): its environment, its timeout, its failure
message with the child's stderr."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT, child_env, run_python


def test_child_env_is_cpu_this_tree_and_no_stray_jaxneurons_settings(monkeypatch):
    monkeypatch.setenv("JAXNEURONS_NATIVE", "0")
    monkeypatch.setenv("JAXNEURONS_PROGRESS", "1")
    monkeypatch.setenv("JAXNEURONS_REQUIRE_NATIVE", "1")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_cpu_enable_fast_math=false")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", ROOT]))
    env = child_env()
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"  # one device, other flags kept
    assert env["PYTHONPATH"].split(os.pathsep) == [ROOT, "/elsewhere"]  # the tree under test first, once
    assert "JAXNEURONS_NATIVE" not in env and "JAXNEURONS_PROGRESS" not in env
    assert env["JAXNEURONS_REQUIRE_NATIVE"] == "1"  # CI's switch reaches the children
    assert child_env(devices=4)["XLA_FLAGS"].split() == ["--xla_cpu_enable_fast_math=false",
                                                         "--xla_force_host_platform_device_count=4"]
    assert child_env(extra={"JAXNEURONS_NATIVE": "0"})["JAXNEURONS_NATIVE"] == "0"  # a test's own setting


def test_child_sees_that_environment():
    code = ("import os, sys, jaxneurons; print(os.environ['JAX_PLATFORMS'], os.environ['XLA_FLAGS'] == '', "
            "os.path.dirname(os.path.dirname(jaxneurons.__file__)) == sys.argv[1])")
    assert run_python(["-c", code, ROOT]).stdout.split() == ["cpu", "True", "True"]


def test_a_failing_child_shows_its_stderr_tail():
    code = "import sys; print('out-line'); sys.stderr.write('x' * 9000 + 'the last words'); sys.exit(3)"
    with pytest.raises(AssertionError, match="exited with status 3") as failed:
        run_python(["-c", code])
    message = str(failed.value)
    assert "the last words" in message and "out-line" in message and "x" * 9000 not in message  # a tail only
    assert run_python(["-c", code], returncodes=(3,)).returncode == 3  # an expected status passes


def test_a_hanging_child_fails_at_its_timeout():
    code = "import sys, time; sys.stderr.write('still waiting'); sys.stderr.flush(); time.sleep(60)"
    with pytest.raises(AssertionError, match="ran past its 2 s timeout") as failed:
        run_python(["-c", code], timeout=2)
    assert "still waiting" in str(failed.value)

"""Run N JAX worker processes on loopback (gloo CPU collectives) for multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(script: str, args_per_process: Sequence[Sequence[str]], timeout: float = 300) -> None:
    """Start ``python script ARGS`` once per entry, wait for all, assert every one exited 0 (log on failure).

    The workers get this repository on PYTHONPATH and CPU JAX without the test suite's 8 forced devices
    (each worker sets its own device count).
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    procs = [subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for args in args_per_process]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]

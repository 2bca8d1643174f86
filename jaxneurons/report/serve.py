"""``serve_results``: a results directory over HTTP on 127.0.0.1, for the neuron explorer.

The explorer is static files (it also opens from disk); the server only makes ``jaxneurons view DIR`` a
one-liner and sidesteps browsers' stricter rules for ``file://`` pages. It binds to the loopback address
only and serves the directory read-only (``http.server``'s GET / HEAD).
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import threading

from jaxneurons.config_flags import field_help
from jaxneurons.report.explorer import EXPLORER_DIR


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """Where ``jaxneurons view`` listens."""

    host: str = field_help("127.0.0.1", "Address to bind (loopback only by default: results stay local).")
    port: int = field_help(8765, "TCP port (0: any free port).")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass


def explorer_entry(results_dir: str) -> str:
    """Path of the explorer's start page below ``results_dir``; ValueError (one line) if it has none."""
    page = os.path.join(results_dir, EXPLORER_DIR, "index.html")
    if not os.path.isdir(results_dir):
        raise ValueError(f"{results_dir}: no such results directory")
    if not os.path.exists(page):
        raise ValueError(f"{results_dir}: no {EXPLORER_DIR}/index.html (not a scan results directory, or written "
                         "before the explorer existed: rerun the scan's report)")
    return page


def serve_results(results_dir: str, config: ViewConfig = ViewConfig()) -> tuple[http.server.ThreadingHTTPServer,
                                                                                 str]:
    """Start serving ``results_dir`` in a background thread; returns (server, explorer URL).

    Call ``server.shutdown()`` to stop it.
    """
    explorer_entry(results_dir)
    handler = functools.partial(_QuietHandler, directory=os.path.abspath(results_dir))
    server = http.server.ThreadingHTTPServer((config.host, config.port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/{EXPLORER_DIR}/index.html"

"""``jaxneurons view RESULTS_DIR``: open a scan's results directory as the neuron explorer in a browser.

    jaxneurons view runs/demo/results             # prints http://127.0.0.1:8765/explorer/index.html
    jaxneurons view results/scan --port 0         # any free port

Serves the directory on 127.0.0.1 until Ctrl-C. The same pages open without a server from
``RESULTS_DIR/explorer/index.html``.
"""

from __future__ import annotations

import sys
import time

from absl import flags

from jaxneurons.config_flags import config_from_flags, define_config_flags
from jaxneurons.errors import error_line
from jaxneurons.report.serve import ViewConfig, serve_results

define_config_flags(ViewConfig)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: jaxneurons view RESULTS_DIR [--port N] [--host ADDR]")
    try:
        server, url = serve_results(argv[1], config_from_flags(ViewConfig))
    except (ValueError, OSError) as e:
        sys.exit(error_line(e))  # one line, also for OSErrors
    print(f"explorer: {url}  (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()

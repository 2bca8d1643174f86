"""Flag wiring shared by the study launchers: a study config dataclass -> absl flags -> the config.

A study's nested data and pruning configs get flags without a prefix (``--model --manifest --densities``);
every other nested config gets ``NAME_`` flags (``--neurons_sigma``, ``--probe_epochs``, ``--speaker_sigma``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from jaxneurons.config_flags import config_from_flags, define_config_flags
from jaxneurons.errors import error_line

FLAT = ("data", "corpora", "pruning")  # nested configs whose fields are flags without a prefix


def define_study_flags(cls: type) -> None:
    from absl import flags

    fields = {f.name: f for f in dataclasses.fields(cls)}
    flat = [n for n in FLAT if n in fields]
    main = sys.argv[0]  # key flags of the launcher: --help lists them
    define_config_flags(cls, skip=flat, module_name=main)
    for name in flat:
        define_config_flags(type(fields[name].default), defaults=fields[name].default, module_name=main)
    flags.DEFINE_string("out", None, "Results directory (written atomically).", module_name=main)


def study_config_from_flags(cls: type) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    flat = {n: config_from_flags(type(fields[n].default)) for n in FLAT if n in fields}
    try:
        return config_from_flags(cls, skip=tuple(flat), **flat)
    except ValueError as e:
        sys.exit(error_line(e))  # one line, also for OSErrors


def run_study(module: Any, cls: type, title: str) -> None:
    """``main`` of a launcher: the config from the flags, ``module.run(config, --out)``, a summary line."""
    from absl import flags, logging

    logging.set_verbosity(logging.WARNING)
    out = flags.FLAGS.out
    if not out:
        sys.exit("error: --out is required")
    config = study_config_from_flags(cls)
    try:
        result = module.run(config, out)
    except (OSError, ValueError) as e:
        sys.exit(error_line(e))  # one line, also for OSErrors
    print(f"{title} -> {out} (report: {out.rstrip('/')}/report.html) in {result.seconds:.0f} s")
    summary = result.scan.summary if result.scan is not None and not isinstance(result.scan, dict) else None
    for prop, groups in (summary or {}).get("totals", {}).items():
        print(f"  {prop}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))


def define_corpus_flags(corpus_b_role: str = "", seed_role: str = "") -> None:
    """``--out`` and the model + two-corpora flags of :class:`jaxneurons.studies.corpora.CorporaConfig` (for a
    launcher that reads them from ``FLAGS`` directly)."""
    from absl import flags

    from jaxneurons.studies.corpora import CorporaConfig

    del corpus_b_role, seed_role  # the help text is the config's
    main = sys.argv[0]
    define_config_flags(CorporaConfig, module_name=main)
    flags.DEFINE_string("out", None, "Results directory (written atomically).", module_name=main)

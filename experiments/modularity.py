"""Study 5 launcher: modularity of FFN neurons (arXiv 2408.17324); the study is :mod:`jaxneurons.studies.modularity`.

    python -m experiments.modularity --out results/modularity              # bundled model + synthetic corpora
    python -m experiments.modularity --out OUT --model DIR --manifest A.jsonl --manifest_b B.jsonl \\
        --tasks language,gender,corpus --moe_expert_size 32 --mean_offset

Every flag but --out comes from :class:`jaxneurons.studies.modularity.ModularityConfig` (defaults and help
there); corpora and scan checkpoints go to --workdir (default OUT.work), and reruns reuse them.
"""

from __future__ import annotations

import sys

from absl import app, flags

from jaxneurons.config_flags import config_from_flags, define_config_flags
from jaxneurons.errors import error_line
from jaxneurons.studies.modularity import ModularityConfig, run

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.out:
        sys.exit("error: --out is required")
    try:
        config = config_from_flags(ModularityConfig)
        run(config, FLAGS.out)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(error_line(e))  # one line, also for OSErrors


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "Results directory (written atomically).")
    define_config_flags(ModularityConfig)
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), flags_parser=parse_flags)  # bad input: one 'error:' line, exit 1

"""Study 4 launcher: attention heads across languages (arXiv 2409.03115); the study is :mod:`jaxneurons.studies.heads`.

    python -m experiments.heads_cross_language --out results/heads_xlang            # full size (~20-30 min, 2 cores)
    python -m experiments.heads_cross_language --out /tmp/xlang --smoke            # tiny, end to end

Every flag but --out comes from :class:`jaxneurons.studies.heads.HeadsStudyConfig` (defaults and help there;
the analysis settings as --heads_*, its phone probe as --heads_probe_*). --smoke replaces the sizes by
:func:`jaxneurons.studies.heads.smoke_config` (keeping --languages, --seed and --workdir).
"""

from __future__ import annotations

import sys

from absl import app, flags

from jaxneurons.config_flags import config_from_flags, define_config_flags
from jaxneurons.errors import error_line
from jaxneurons.studies.heads import HeadsStudyConfig, run, smoke_config

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.out:
        sys.exit("error: --out is required")
    try:
        config = config_from_flags(HeadsStudyConfig)
        if config.smoke:
            config = smoke_config(languages=config.languages, seed=config.seed, workdir=config.workdir)
        result = run(config, FLAGS.out)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(error_line(e))  # one line, also for OSErrors
    print(f"cross-language heads -> {result.out_dir} (report: {result.out_dir}/report.html)")


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "Results directory (written atomically).")
    define_config_flags(HeadsStudyConfig)
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), flags_parser=parse_flags)  # bad input: one 'error:' line, exit 1

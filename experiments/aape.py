"""Study 3: class-specific neurons by activation-probability entropy (AAPE, arXiv 2602.15307, after LAPE).

    python -m experiments.aape --out results/aape                      # bundled model + synthetic corpora
    python -m experiments.aape --out OUT --model DIR --manifest A.jsonl [--manifest_b B.jsonl] --tasks gender,speaker

Wiring only: flags come from :class:`jaxneurons.studies.aape.AAPEStudyConfig` (its defaults are the study's
values); the work is :func:`jaxneurons.studies.aape.run`.
"""

from absl import app

from experiments.common import define_study_flags, run_study
from jaxneurons.studies import aape


def main(argv: list[str]) -> None:
    del argv
    run_study(aape, aape.AAPEStudyConfig, "AAPE")


if __name__ == "__main__":
    define_study_flags(aape.AAPEStudyConfig)
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), flags_parser=parse_flags)  # bad input: one 'error:' line, exit 1

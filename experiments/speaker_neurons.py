"""Study 2: label-free speaker neurons (arXiv 2506.21712): clusters, per-layer counts, protected pruning.

    python -m experiments.speaker_neurons --out results/speaker_neurons               # bundled model, synthetic
    python -m experiments.speaker_neurons --model DIR --manifest M.jsonl --out R --speaker_sigma 0.8

Wiring only: flags come from :class:`jaxneurons.studies.speaker_neurons.SpeakerNeuronsConfig` (its defaults
are the study's values, e.g. ``--protect speaker,ssl_cluster``: P_ive ∪ P_ssl); the work is
:func:`jaxneurons.studies.speaker_neurons.run`.
"""

from absl import app

from experiments.common import define_study_flags, run_study
from jaxneurons.studies import speaker_neurons

define_study_flags(speaker_neurons.SpeakerNeuronsConfig)


def main(argv: list[str]) -> None:
    del argv
    run_study(speaker_neurons, speaker_neurons.SpeakerNeuronsConfig, "speaker neurons")


if __name__ == "__main__":
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), flags_parser=parse_flags)  # bad input: one 'error:' line, exit 1

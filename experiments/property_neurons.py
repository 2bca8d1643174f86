"""Study 1: property neurons (arXiv 2409.05910): per-layer counts, model editing, protected pruning.

    python -m experiments.property_neurons --out results/property_neurons             # bundled model, synthetic
    python -m experiments.property_neurons --model DIR --manifest M.jsonl --out R \\
        --neurons_per_step 128 --updates_per_step 25000 --num_clusters 512           # a real checkpoint

Wiring only: flags come from :class:`jaxneurons.studies.property_neurons.PropertyNeuronsConfig` (its defaults
are the study's values); the work is :func:`jaxneurons.studies.property_neurons.run`.
"""

from absl import app

from experiments.common import define_study_flags, run_study
from jaxneurons.studies import property_neurons

define_study_flags(property_neurons.PropertyNeuronsConfig)


def main(argv: list[str]) -> None:
    del argv
    run_study(property_neurons, property_neurons.PropertyNeuronsConfig, "property neurons")


if __name__ == "__main__":
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), flags_parser=parse_flags)  # bad input: one 'error:' line, exit 1

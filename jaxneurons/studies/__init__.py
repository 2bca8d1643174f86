"""The studies as a library: one module per study, each a frozen config dataclass (every default the paper's
value, cited in its docstring) and ``run(config, out_dir) -> result``.

- :mod:`jaxneurons.studies.property_neurons` (arXiv 2409.05910), :mod:`~jaxneurons.studies.speaker_neurons`
  (arXiv 2506.21712), :mod:`~jaxneurons.studies.aape` (arXiv 2602.15307); shared parts:
  :mod:`~jaxneurons.studies.common` (model + corpus, editing table), :mod:`~jaxneurons.studies.pruning`
  (protected pruning), :mod:`~jaxneurons.studies.corpora` (tasks over one or two corpora);
  :mod:`~jaxneurons.studies.heads` (arXiv 2409.03115), :mod:`~jaxneurons.studies.modularity` (arXiv 2408.17324).

Launchers in ``experiments/`` only map flags to these configs.
"""

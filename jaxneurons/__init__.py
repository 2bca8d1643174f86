"""jaxneurons: find, score, ablate and prune the neurons and attention heads of speech Transformers.

The notebook API (imports are lazy, so ``import jaxneurons`` stays cheap)::

    import jaxneurons as jn
    model = jn.load("default")                        # or jn.load(jn.convert("facebook/hubert-base-ls960", "m"))
    utts = jn.read_manifest("my_corpus/manifest.jsonl")
    result = jn.scan(model, utts, ["phone_type", "gender"])        # property neurons (arXiv 2409.05910)
    sets = result.to_neuron_sets()                                  # NeuronSets: 'phone_type/vowel', ...
    suite = jn.ProbeSuite(utts, jn.ProbeSuiteConfig(tasks=("phone", "gender")))
    suite.fit(model)
    suite.evaluate(model, sets.to_ablation(model, "phone_type/vowel"))   # probes with those neurons zeroed

- load / convert: :func:`load` (a model directory or ``"default"``), :func:`convert` (a Hugging Face checkpoint
  -> a jaxneurons model directory), :func:`build_model`, :func:`save_model`;
- data: :func:`read_manifest`, :func:`write_manifest`, :func:`generate_corpus` (synthetic espeak-ng speech);
- capture: :func:`forward_with_captures` (hidden states, FFN activations, attention maps);
- scan / score: :func:`scan` (one or many models; :class:`ScanOptions`, the property classes
  :class:`PhoneType` :class:`Gender` :class:`Pitch` :class:`SpeakerNeurons` :class:`AAPE` :class:`Selective`),
  :func:`score` (rescore statistics);
- ablate: :class:`NeuronSets`, :class:`Ablation`;
- prune: :func:`protected_prune`, :func:`iterative_prune`, :func:`slim_model`, :func:`zero_pruned`;
- probe: :class:`ProbeSuite`, :class:`ProbeSuiteConfig`;
- studies: :mod:`jaxneurons.studies` (``property_neurons``, ``speaker_neurons``, ``aape``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_model": "jaxneurons.models",
    "forward_with_captures": "jaxneurons.models",
    "SpeechConfig": "jaxneurons.models",
    "save_model": "jaxneurons.models.checkpoint",
    "load_model": "jaxneurons.models.checkpoint",
    "read_manifest": "jaxneurons.data",
    "write_manifest": "jaxneurons.data",
    "generate_corpus": "jaxneurons.data",
    "scan": "jaxneurons.pipeline.scan",
    "score": "jaxneurons.pipeline.scan",
    "ScanOptions": "jaxneurons.pipeline.scan",
    "ScanResult": "jaxneurons.pipeline.scan",
    "PhoneType": "jaxneurons.pipeline.properties",
    "Gender": "jaxneurons.pipeline.properties",
    "Pitch": "jaxneurons.pipeline.properties",
    "SpeakerNeurons": "jaxneurons.pipeline.properties",
    "AAPE": "jaxneurons.pipeline.properties",
    "Selective": "jaxneurons.pipeline.properties",
    "Property": "jaxneurons.pipeline.properties",
    "PropertyNeuronConfig": "jaxneurons.pipeline.properties",
    "SpeakerNeuronConfig": "jaxneurons.pipeline.properties",
    "AAPEConfig": "jaxneurons.pipeline.properties",
    "NeuronSets": "jaxneurons.interventions",
    "Ablation": "jaxneurons.interventions",
    "protected_prune": "jaxneurons.pruning",
    "iterative_prune": "jaxneurons.pruning",
    "slim_model": "jaxneurons.pruning",
    "zero_pruned": "jaxneurons.pruning",
    "ProbeSuite": "jaxneurons.probes",
    "ProbeSuiteConfig": "jaxneurons.probes",
}

__all__ = sorted([*_EXPORTS, "convert", "load", "studies"])


def load(path: str = "default") -> Any:
    """A jaxneurons model directory (safetensors weights + config.json), or ``"default"`` for the bundled one."""
    from jaxneurons.assets import resolve_model_path
    from jaxneurons.models.checkpoint import load_model

    return load_model(resolve_model_path(path))


def convert(source: str, out_dir: str) -> str:
    """Convert a Hugging Face checkpoint (a local directory or a cached hub name) into a jaxneurons model
    directory ``out_dir``; returns ``out_dir`` (load it with :func:`load`)."""
    from checkpoints_convert.convert import convert as _convert

    _convert(source, out_dir)
    return out_dir


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name == "studies":
        return importlib.import_module("jaxneurons.studies")
    raise AttributeError(f"module 'jaxneurons' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

"""Data layer: manifest, audio loading, synthetic espeak-ng corpus, real-corpus readers, frame labels, batches.

Modules: ``manifest`` (schema, read/write), ``audio`` (load_audio + DataIssues), ``phones`` (phone sets,
groups, espeak/TIMIT/ARPAbet maps), ``synth`` (espeak-ng corpus; CLI), ``readers`` (TIMIT, MFA/LibriSpeech,
VoxCeleb, path lists; CLI), ``textgrid``, ``frames`` (frame geometry, labels, middle frames, vocabularies),
``batching`` (bucketed loader, sharding), ``decoded`` (a decoded corpus shared by several models' scans, with
the ``on_error`` policy for files that cannot be decoded). Importing this package does not start espeak.
"""

from jaxneurons.data.audio import (
    AudioError,
    DataIssues,
    audio_info,
    load_audio,
    resample,
    resampled_length,
    scan_audio,
)
from jaxneurons.data.batching import Batch, BatchLoader, FrameLabelSpec, dummy_like, shard_manifest
from jaxneurons.data.decoded import DecodedDataset, DecodeOptions, LeftOut
from jaxneurons.data.frames import (
    MELHUBERT_FBANK,
    WAV2VEC2_CONV,
    ConvFrontEnd,
    FbankFrontEnd,
    LabelVocab,
    frame_centres,
    frame_labels,
    frame_spans,
    middle_frame_mask,
    segment_index_per_frame,
    utterance_frame_labels,
)
from jaxneurons.data.manifest import (
    MANIFEST_VERSION,
    ManifestError,
    Utterance,
    manifest_fingerprint,
    read_manifest,
    write_manifest,
)
from jaxneurons.data.phones import (
    PHONE_SETS,
    PHONE_TYPES,
    UnknownPhoneError,
    arpabet_to_phone,
    espeak_to_phone,
    fold_timit,
    phone_set,
    phone_type,
    register_phone_set,
)
from jaxneurons.data.textgrid import TextGridError, read_textgrid

# synth and readers are also CLI modules (python -m ...); importing them lazily keeps runpy from
# finding them half-imported.
_LAZY = {
    "generate_corpus": "synth", "make_speakers": "synth", "CorpusError": "readers", "read_mfa": "readers",
    "read_path_list": "readers", "read_timit": "readers", "read_voxceleb": "readers",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"jaxneurons.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'jaxneurons.data' has no attribute {name!r}")

__all__ = [
    "MANIFEST_VERSION", "MELHUBERT_FBANK", "PHONE_SETS", "PHONE_TYPES", "WAV2VEC2_CONV", "AudioError", "Batch",
    "BatchLoader", "ConvFrontEnd", "CorpusError", "DataIssues", "DecodeOptions", "DecodedDataset", "FbankFrontEnd",
    "FrameLabelSpec", "LabelVocab", "LeftOut",
    "ManifestError", "TextGridError", "UnknownPhoneError", "Utterance", "arpabet_to_phone", "audio_info",
    "dummy_like", "espeak_to_phone", "fold_timit", "frame_centres", "frame_labels", "frame_spans",
    "generate_corpus", "load_audio", "make_speakers", "manifest_fingerprint", "middle_frame_mask", "phone_set",
    "phone_type", "read_manifest", "read_mfa", "read_path_list", "read_textgrid", "read_timit", "read_voxceleb",
    "register_phone_set", "resample", "resampled_length", "scan_audio", "segment_index_per_frame",
    "shard_manifest", "utterance_frame_labels", "write_manifest",
]

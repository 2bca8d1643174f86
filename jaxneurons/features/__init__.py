"""Speech features in JAX: Kaldi fbank, MFCC + deltas, YIN F0 + pitch bins, i-vectors.

Modules: ``fbank`` (Kaldi log-mel, per-utterance MVN), ``mfcc`` (Kaldi MFCC, deltas, CMN, energy VAD),
``pitch`` (YIN F0 in 20 ms frames, pitch bins at the 33rd/66th percentiles), ``ivector`` (GMM-UBM,
Baum-Welch statistics, total-variability EM, i-vectors, length normalisation, pair EER; ``IVectorConfig``,
fit / save / load of an extractor). Every kernel is
jit-compiled and works on padded batches with lengths.
"""

from jaxneurons.features.fbank import (
    FLOAT32_EPS,
    fbank,
    frame_params,
    inverse_mel_scale,
    mel_banks,
    mel_scale,
    num_frames,
    power_spectrum_frames,
    utterance_mvn,
    window_function,
)
from jaxneurons.features.ivector import (
    DiagGMM,
    IVectorConfig,
    IVectorExtractor,
    IVectorExtractorError,
    LengthNorm,
    apply_length_norm,
    baum_welch_stats,
    collect_stats,
    extract_ivectors,
    fit_ivector_extractor,
    fit_length_norm,
    gmm_log_likelihoods,
    gmm_posteriors,
    ivector_pipeline,
    length_normalize,
    load_ivector_extractor,
    pairwise_eer,
    save_ivector_extractor,
    train_ivector_extractor,
    train_ubm,
    utterance_ivectors,
)
from jaxneurons.features.mfcc import (
    add_deltas,
    cmn,
    dct_matrix,
    delta_filters,
    energy_vad,
    frame_log_energy,
    lifter_coeffs,
    mfcc,
)
from jaxneurons.features.pitch import (
    LIBRISPEECH_DEV_CLEAN_PITCH_EDGES,
    pitch_bin_edges,
    pitch_bins,
    yin,
    yin_lags,
)

__all__ = [
    "FLOAT32_EPS", "LIBRISPEECH_DEV_CLEAN_PITCH_EDGES", "DiagGMM", "IVectorConfig", "IVectorExtractor",
    "IVectorExtractorError", "LengthNorm", "fit_ivector_extractor", "load_ivector_extractor",
    "save_ivector_extractor", "utterance_ivectors",
    "add_deltas", "apply_length_norm", "baum_welch_stats", "cmn", "collect_stats", "dct_matrix",
    "delta_filters", "energy_vad", "extract_ivectors", "fbank", "fit_length_norm", "frame_log_energy",
    "frame_params", "gmm_log_likelihoods", "gmm_posteriors", "inverse_mel_scale", "ivector_pipeline",
    "length_normalize", "lifter_coeffs", "mel_banks", "mel_scale", "mfcc", "num_frames", "pairwise_eer",
    "pitch_bin_edges", "pitch_bins", "power_spectrum_frames", "train_ivector_extractor", "train_ubm",
    "utterance_mvn", "window_function", "yin", "yin_lags",
]

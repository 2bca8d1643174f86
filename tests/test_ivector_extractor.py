"""The i-vector extractor on small corpora: sizes from the data, a non-degenerate T, the saved artifact."""

import dataclasses
import json
import logging
import os
import pathlib

import numpy as np
import pytest

from jaxneurons.features import ivector as iv
from jaxneurons.pipeline.labels import ivector_clusters, ivector_clusters_of_features

REALSPEECH = os.environ.get("JAXNEURONS_REALSPEECH", "/work/shared/realspeech/librispeech-251")


def test_config_defaults_are_the_study_front_end():
    """arXiv 2506.21712: 64-component UBM, R = 100, MFCC only, plain i-vectors; pitch options stay off."""
    cfg = iv.IVectorConfig()
    assert (cfg.num_components, cfg.ivector_dim, cfg.pitch_weight, cfg.space, cfg.whiten) == (64, 100, 0.0,
                                                                                             "ivector", False)
    assert cfg.dims == "auto" and cfg.min_divergence
    with pytest.raises(ValueError, match="space"):
        iv.IVectorConfig(space="pca")
    with pytest.raises(ValueError, match="dims"):
        iv.IVectorConfig(dims="big")


def test_sizes_follow_the_amount_of_data():
    cfg = iv.IVectorConfig()
    assert cfg.sizes(100, 10**6)[:2] == (64, 5)  # 20 utterances per i-vector dimension
    assert cfg.sizes(160, 10**6)[:2] == (64, 8)
    assert cfg.sizes(251, 10**6)[:2] == (64, 12)
    assert cfg.sizes(10**5, 10**8)[:2] == (64, 100)  # a large corpus gets the study's sizes
    assert cfg.sizes(10, 3000)[:2] == (15, 2)  # 200 frames per component, at least 2 dims
    assert "utterances" in cfg.sizes(100, 10**6)[2]
    assert dataclasses.replace(cfg, dims="fixed").sizes(10, 3000)[:2] == (64, 100)


def planted_corpus(num_utts: int = 60, frames: int = 150, seed: int = 0, components: int = 16, dim: int = 8):
    """Utterances from a GMM whose means move by ``T w`` (supervector of 128 dims for 60 utterances, like
    2496 dims for a few hundred real ones); w's first coordinate is a binary 'gender' (+-1), three more are
    N(0, 1) 'speaker' factors of half its loading."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (components, dim))
    loading = rng.normal(0, 1, (components, dim, 4)) * np.array([0.4, 0.2, 0.2, 0.2])
    gender = np.arange(num_utts) % 2
    utts = []
    for u in range(num_utts):
        w = np.concatenate([[1.0 if gender[u] else -1.0], rng.normal(0, 1, 3)])
        comp = rng.integers(0, components, frames)
        utts.append(((means + loading @ w)[comp] + rng.normal(0, 1, (frames, dim))).astype(np.float32))
    return utts, gender


def purity(groups, truth):
    agree = np.mean(groups == truth)
    return max(agree, 1 - agree)


def test_auto_dims_keep_small_corpus_ivectors_well_posed(caplog):
    """60 utterances, configured R = 50: the auto size (60 // 20 = 3 dims, logged) keeps the planted binary
    factor the leading i-vector direction; at the fixed size the ML T whitens sampling noise into ~50
    near-equal directions (no axis for k-means to follow: the real-speech failure at R = 100)."""
    utts, gender = planted_corpus()
    base = iv.IVectorConfig(num_components=16, ivector_dim=50, ubm_iters=4, tv_iters=4)
    with caplog.at_level(logging.INFO, logger="jaxneurons.features.ivector"):
        groups, vecs = ivector_clusters_of_features(utts, None, 2, config=base)
    assert vecs.shape == (60, 3)
    assert any("16 components, 3 dims (configured 16 / 50) from 60 utterances" in r.getMessage()
               for r in caplog.records)
    assert purity(groups, gender) >= 0.95
    top = np.linalg.svd(vecs - vecs.mean(0), full_matrices=False)[0][:, 0]
    assert abs(np.corrcoef(top, gender)[0, 1]) > 0.9  # the leading direction is the planted factor
    _, fixed = ivector_clusters_of_features(utts, None, 2, config=dataclasses.replace(base, dims="fixed"))
    eig = np.linalg.eigvalsh(np.cov(fixed.T))[::-1]
    assert fixed.shape == (60, 50) and eig[0] / eig.sum() < 0.15  # near-isotropic: the degenerate case


def fitted(tmp_path, with_stream: bool):
    utts, _ = planted_corpus(num_utts=40, frames=200, seed=1)
    cfg = iv.IVectorConfig(num_components=4, ivector_dim=3, ubm_iters=3, tv_iters=2, dims="fixed",
                           pitch_weight=4.0 if with_stream else 0.0)
    ext = iv.fit_ivector_extractor(utts, cfg, align_dims=5 if with_stream else None,
                                   stream_norm=(4.9, 0.3) if with_stream else None)
    return utts, cfg, ext, iv.save_ivector_extractor(ext, str(tmp_path / "ivector_extractor"), config=cfg,
                                                     info={"corpus": "planted"})


def test_save_load_round_trip(tmp_path):
    utts, cfg, ext, path = fitted(tmp_path, with_stream=True)
    back = iv.load_ivector_extractor(path)
    for a, b in zip(ext.ubm, back.ubm, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ext.T), np.asarray(back.T))
    np.testing.assert_array_equal(np.asarray(ext.precision_scale), np.asarray(back.precision_scale))
    assert (back.align_dims, back.stream_norm) == (5, (4.9, 0.3))
    np.testing.assert_array_equal(iv.utterance_ivectors(ext, utts, cfg), iv.utterance_ivectors(back, utts, cfg))
    meta = json.loads(pathlib.Path(path, iv.EXTRACTOR_META).read_text())
    assert meta["config"]["pitch_weight"] == 4.0 and meta["info"] == {"corpus": "planted"}
    # Reusing it: the features must carry the stream the extractor was fitted with.
    with pytest.raises(ValueError, match="log-F0 stream"):
        ivector_clusters_of_features([u[:, :5] for u in utts], None, 2, config=cfg, extractor=back)


def _truncate(path):
    arrays = pathlib.Path(path, iv.EXTRACTOR_ARRAYS)
    data = arrays.read_bytes()
    arrays.write_bytes(data[: len(data) // 2])
    return str(arrays), "not a readable safetensors file"


def _json_edit(key, value, what):
    def edit(path):
        meta_path = pathlib.Path(path, iv.EXTRACTOR_META)
        meta = json.loads(meta_path.read_text())
        meta[key] = value
        meta_path.write_text(json.dumps(meta))
        return (os.path.join(path, iv.EXTRACTOR_ARRAYS) if what == "arrays" else str(meta_path)), None
    return edit


def _garbage_json(path):
    meta_path = pathlib.Path(path, iv.EXTRACTOR_META)
    meta_path.write_text("{not json")
    return str(meta_path), "not readable JSON"


def _missing(name):
    def remove(path):
        os.remove(os.path.join(path, name))
        return os.path.join(path, name), "missing"
    return remove


@pytest.mark.parametrize("corrupt, message", [
    (_truncate, None),
    (_json_edit("ivector_dim", 7, "arrays"), "T has shape (4, 8, 3)"),
    (_json_edit("feature_dim", 5, "arrays"), "ubm_means has shape (4, 8)"),
    (_json_edit("version", 99, "meta"), "version 99"),
    (_json_edit("stream_norm", [1.0, -2.0], "meta"), "stream_norm"),
    (_garbage_json, None),
    (_missing(iv.EXTRACTOR_ARRAYS), None),
    (_missing(iv.EXTRACTOR_META), None),
])
def test_corrupt_or_mismatched_extractor_names_the_file(tmp_path, corrupt, message):
    _, _, _, path = fitted(tmp_path, with_stream=True)
    bad_file, default_message = corrupt(path)
    with pytest.raises(iv.IVectorExtractorError) as err:
        iv.load_ivector_extractor(path)
    text = str(err.value)
    assert text.startswith(bad_file + ":") and "\n" not in text, text
    assert (message or default_message) in text, text


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(REALSPEECH, "utterances.tsv")),
                    reason=f"real speech not found at {REALSPEECH} (set JAXNEURONS_REALSPEECH to librispeech-251)")
def test_real_speech_default_clusters_follow_gender():
    """The study's default front end on 160 real LibriSpeech utterances (one per speaker): k = 2 clusters
    match gender at >= 0.9 (the study: 97.2 % male / 89.8 % female). ~1 min on a loaded 2-core machine."""
    import csv

    from jaxneurons.data import load_audio

    with open(os.path.join(REALSPEECH, "utterances.tsv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    rows = [rows[i] for i in np.sort(np.random.default_rng(0).permutation(len(rows))[:160])]
    female = np.array([r["gender"] == "f" for r in rows])
    groups, vecs = ivector_clusters([load_audio(os.path.join(REALSPEECH, r["path"])) for r in rows], 2)
    assert vecs.shape == (160, 8)
    assert purity(groups, female) >= 0.9

"""i-vectors: GMM/E-step maths against NumPy, recovery of a planted latent, and synthetic speakers."""

import numpy as np
import pytest
from scipy.signal import lfilter
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans

from jaxneurons.features import ivector as iv
from jaxneurons.features.mfcc import add_deltas, cmn, mfcc

SR = 16000
# /a e i o u/ formants (Hz) of an adult male voice; other voices scale them.
VOWELS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]], float
)


def make_speaker(rng, female):
    """Male/female differ in F0 range and vocal-tract length (formant scale), like real voices."""
    return {
        "f0": rng.uniform(190, 240) if female else rng.uniform(95, 130),
        "scale": (1.17 if female else 1.0) * rng.uniform(0.95, 1.05),
        "tilt": rng.uniform(0.9, 0.98),
        "bw": rng.uniform(0.8, 1.3),
    }


def utterance(rng, spk, n_seg=10):
    """Vowel sequence (each vowel twice, random order and durations) with F0 drift and pauses."""
    order = np.concatenate([rng.permutation(len(VOWELS)) for _ in range(-(-n_seg // len(VOWELS)))])
    out = []
    for k in range(n_seg):
        n = int(SR * rng.uniform(0.08, 0.2))
        f0 = spk["f0"] * rng.uniform(0.9, 1.1) * np.linspace(1.0, rng.uniform(0.92, 1.08), n)
        src = np.diff(np.floor(np.cumsum(f0 / SR)), prepend=0.0)
        y = lfilter([1.0], [1.0, -spk["tilt"]], src)
        for f, b in zip(VOWELS[order[k]] * spk["scale"], (80, 100, 120), strict=True):
            r = np.exp(-np.pi * b * spk["bw"] / SR)
            y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], y)
        out += [y / (np.abs(y).max() + 1e-9) * rng.uniform(0.3, 0.6), np.zeros(int(SR * rng.uniform(0.02, 0.06)))]
    x = np.concatenate(out)
    return (x + 1e-3 * rng.standard_normal(x.size)).astype(np.float32)


def speaker_features(wavs):
    """MFCC 13 + deltas + delta-deltas with per-utterance CMN, as a list of (T_u, 39) arrays."""
    lens = np.array([len(w) for w in wavs])
    batch = np.zeros((len(wavs), lens.max()), np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    feats, n = mfcc(batch, lens)
    feats = np.asarray(add_deltas(cmn(feats, n), n))
    return [feats[i, : int(n[i])] for i in range(len(wavs))]


def _random_gmm(rng, C=4, D=3):
    w = rng.uniform(0.5, 1.5, C)
    return iv.DiagGMM(
        np.asarray(w / w.sum(), np.float32),
        rng.normal(0, 3, (C, D)).astype(np.float32),
        rng.uniform(0.3, 2.0, (C, D)).astype(np.float32),
    )


def test_gmm_log_likelihoods_match_scipy():
    rng = np.random.default_rng(0)
    gmm = _random_gmm(rng)
    x = rng.normal(0, 3, (50, 3)).astype(np.float32)
    got = np.asarray(iv.gmm_log_likelihoods(gmm, x))
    ref = np.stack(
        [np.log(gmm.weights[c]) + multivariate_normal(gmm.means[c], np.diag(gmm.variances[c])).logpdf(x)
         for c in range(4)], axis=1,
    )
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
    post, total = iv.gmm_posteriors(gmm, x)
    np.testing.assert_allclose(np.asarray(post).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(total), np.logaddexp.reduce(ref, axis=1), atol=1e-3)


def test_train_ubm_recovers_separated_components():
    rng = np.random.default_rng(1)
    means = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    labels = rng.integers(3, size=6000)
    x = (means[labels] + rng.normal(0, [0.5, 1.0], (6000, 2))).astype(np.float32)
    gmm, history = iv.train_ubm(x, 3, num_iters=15, chunk=1024)
    order = np.argsort(np.asarray(gmm.means)[:, 0] + 0.1 * np.asarray(gmm.means)[:, 1])
    np.testing.assert_allclose(np.asarray(gmm.means)[order], means[np.argsort(means[:, 0])], atol=0.15)
    np.testing.assert_allclose(np.asarray(gmm.variances), np.tile([0.25, 1.0], (3, 1)), rtol=0.15)
    np.testing.assert_allclose(np.asarray(gmm.weights).sum(), 1.0, atol=1e-5)
    assert np.all(np.diff(history) > -1e-4)  # EM never decreases the likelihood
    with pytest.raises(ValueError, match="fewer than"):
        iv.train_ubm(x[:2], 3)
    with pytest.raises(ValueError, match="NaN"):
        iv.train_ubm(np.full((10, 2), np.nan), 2)


def test_variance_floor_holds():
    rng = np.random.default_rng(2)
    # A spike of identical frames (same shapes as the test above, so nothing recompiles).
    x = np.concatenate([np.zeros((3000, 2)), rng.normal(0, 1, (3000, 2))]).astype(np.float32)
    gmm, _ = iv.train_ubm(x, 3, num_iters=5, var_floor=0.01, chunk=1024)
    gvar = x.var(0)
    assert np.all(np.asarray(gmm.variances) >= 0.01 * gvar - 1e-7)
    assert np.all(np.isfinite(np.asarray(gmm.means)))


def test_baum_welch_stats_padding_and_centring():
    rng = np.random.default_rng(3)
    gmm = _random_gmm(rng)
    utts = [rng.normal(0, 3, (n, 3)).astype(np.float32) for n in (40, 7, 65)]
    N, F = iv.collect_stats(gmm, utts, batch_size=2, bucket=16)
    for u, x in enumerate(utts):
        ll = np.stack(
            [np.log(gmm.weights[c]) + multivariate_normal(gmm.means[c], np.diag(gmm.variances[c])).logpdf(x)
             for c in range(4)], axis=1,
        )
        post = np.exp(ll - np.logaddexp.reduce(ll, axis=1, keepdims=True))
        np.testing.assert_allclose(N[u], post.sum(0), rtol=1e-4)
        ref = post.T @ x - post.sum(0)[:, None] * np.asarray(gmm.means)
        np.testing.assert_allclose(F[u], ref, rtol=1e-3, atol=1e-3)
        assert np.isclose(N[u].sum(), len(x), rtol=1e-4)
    with pytest.raises(ValueError, match="utterance 1"):
        iv.collect_stats(gmm, [utts[0], np.zeros((5, 4), np.float32)])


def test_posterior_matches_dense_numpy():
    rng = np.random.default_rng(4)
    C, D, R, U = 4, 3, 2, 5
    T = rng.normal(size=(C, D, R)).astype(np.float32)
    var = rng.uniform(0.5, 2, (C, D)).astype(np.float32)
    n = rng.uniform(0, 20, (U, C)).astype(np.float32)
    f = rng.normal(size=(U, C, D)).astype(np.float32)
    w, cov = iv._posterior(T, var, n, f)
    for u in range(U):
        L = np.eye(R) + sum(n[u, c] * T[c].T @ np.diag(1 / var[c]) @ T[c] for c in range(C))
        b = sum(T[c].T @ (f[u, c] / var[c]) for c in range(C))
        np.testing.assert_allclose(np.asarray(w[u]), np.linalg.solve(L, b), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(cov[u]), np.linalg.inv(L), rtol=1e-4, atol=1e-6)


def test_total_variability_recovers_planted_latent():
    """Frames drawn from a GMM whose means move along a known T: i-vectors must predict the true w."""
    rng = np.random.default_rng(5)
    C, D, R, U, n = 6, 4, 3, 120, 200
    mu = rng.normal(0, 3, (C, D))
    var = rng.uniform(0.5, 1.5, (C, D))
    T_true = 0.7 * rng.normal(size=(C, D, R))
    W = rng.normal(size=(U, R))
    utts = []
    for u in range(U):
        c = rng.integers(C, size=n)
        m = mu + T_true @ W[u]
        utts.append((m[c] + np.sqrt(var[c]) * rng.normal(size=(n, D))).astype(np.float32))
    ubm, _ = iv.train_ubm(np.concatenate(utts), C, num_iters=20)
    N, F = iv.collect_stats(ubm, utts)
    ext = iv.train_ivector_extractor(ubm, N, F, R, num_iters=5, batch=32)
    w = iv.extract_ivectors(ext, N, F, batch=32)
    assert w.shape == (U, R) and np.all(np.isfinite(w))
    A = np.c_[w, np.ones(U)]
    coef, *_ = np.linalg.lstsq(A, W, rcond=None)
    r2 = 1 - (W - A @ coef).var(0) / W.var(0)
    assert np.all(r2 > 0.9), r2
    # The minimum-divergence step keeps the prior standard: i-vector covariance close to identity.
    assert np.allclose(np.linalg.eigvalsh(np.cov(w.T)), 1.0, atol=0.3)
    with pytest.raises(ValueError, match="do not fit"):
        iv.train_ivector_extractor(ubm, N[:, :2], F, R)


def test_extend_gmm_keeps_alignment_and_weights_the_stream():
    rng = np.random.default_rng(9)
    gmm = _random_gmm(rng)  # 4 components, 3 dims
    x = rng.normal(0, 3, (300, 3)).astype(np.float32)
    aux = (x[:, :1] * 0.5 + rng.normal(0, 1, (300, 1))).astype(np.float32)
    ext = iv.extend_gmm(gmm, np.c_[x, aux], chunk=128)
    np.testing.assert_array_equal(np.asarray(ext.means)[:, :3], gmm.means)
    post = np.asarray(iv.gmm_posteriors(gmm, x)[0])
    np.testing.assert_allclose(np.asarray(ext.means)[:, 3], post.T @ aux[:, 0] / post.sum(0), rtol=1e-4, atol=1e-4)
    utts = [np.c_[x, aux][:120], np.c_[x, aux][120:]]
    N, F = iv.collect_stats(ext, utts, align_dims=3)
    N0, F0 = iv.collect_stats(gmm, [u[:, :3] for u in utts])
    np.testing.assert_allclose(N, N0, rtol=1e-5)  # the stream does not move the alignment
    np.testing.assert_allclose(F[..., :3], F0, rtol=1e-4, atol=1e-4)
    scale = np.array([1, 1, 1, 4], np.float32)
    model = iv.train_ivector_extractor(ext, N, F, 2, num_iters=1, batch=8, precision_scale=scale)
    np.testing.assert_allclose(np.asarray(model.model_variances), np.asarray(ext.variances) / scale, rtol=1e-6)
    with pytest.raises(ValueError, match="precision_scale"):
        iv.train_ivector_extractor(ext, N, F, 2, precision_scale=np.zeros(4))
    with pytest.raises(ValueError, match="more than"):
        iv.extend_gmm(gmm, x)


def test_supervector_coordinates_give_the_kl_metric():
    rng = np.random.default_rng(10)
    gmm = _random_gmm(rng)
    T = rng.normal(size=(4, 3, 2)).astype(np.float32)
    ext = iv.IVectorExtractor(gmm, T)
    M = sum(gmm.weights[c] * T[c].T @ np.diag(1 / gmm.variances[c]) @ T[c] for c in range(4))
    np.testing.assert_allclose(iv.supervector_metric(ext), M, rtol=1e-5)
    w = rng.normal(size=(5, 2))
    y = iv.supervector_coordinates(ext, w)
    d = w[:, None] - w[None]
    np.testing.assert_allclose(((y[:, None] - y[None]) ** 2).sum(-1), np.einsum("abr,rs,abs->ab", d, M, d),
                               rtol=1e-4, atol=1e-5)


def test_length_norm():
    rng = np.random.default_rng(6)
    x = rng.normal(3.0, [1.0, 5.0, 0.1], (200, 3))
    y = iv.length_normalize(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    norm = iv.fit_length_norm(x, whiten=True)
    z = (x - np.asarray(norm.mean)) @ np.asarray(norm.transform).T
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(3), atol=1e-3)
    with pytest.raises(ValueError, match="U >= 2"):
        iv.fit_length_norm(x[:1])


def test_pairwise_eer():
    spk = np.repeat(np.arange(4), 3)
    clean = np.eye(4)[spk] + 0.01 * np.random.default_rng(7).normal(size=(12, 4))
    assert iv.pairwise_eer(clean, spk) == 0.0
    noise = np.random.default_rng(8).normal(size=(400, 8))
    assert 0.35 < iv.pairwise_eer(noise, np.repeat(np.arange(40), 10)) < 0.65
    with pytest.raises(ValueError, match="both"):
        iv.pairwise_eer(clean, np.zeros(12))


def test_synthetic_speakers_ivectors():
    """16 synthetic speakers (8 'male', 8 'female') x 4 utterances of ~1.5 s."""
    rng = np.random.default_rng(0)
    speakers = [make_speaker(rng, female=bool(i % 2)) for i in range(16)]
    wavs, spk = [], []
    for s, sp in enumerate(speakers):
        for _ in range(4):
            wavs.append(utterance(rng, sp))
            spk.append(s)
    spk = np.array(spk)
    gender = spk % 2
    feats = speaker_features(wavs)
    ivecs, ext = iv.ivector_pipeline(feats, num_components=16, ivector_dim=10, ubm_iters=10, tv_iters=5,
                                     dims="fixed")
    assert ivecs.shape == (64, 10) and ext.T.shape == (16, 39, 10)
    np.testing.assert_allclose(np.linalg.norm(ivecs, axis=1), 1.0, atol=1e-5)
    eer = iv.pairwise_eer(ivecs, spk)
    assert eer < 0.35, eer  # chance is 0.5
    clusters = KMeans(2, n_init=10, random_state=0).fit_predict(ivecs)
    agreement = max((clusters == gender).mean(), (clusters != gender).mean())
    assert agreement >= 0.8, agreement  # chance is about 0.5


def test_espeak_corpus_ivector_clusters_follow_gender(tmp_path):
    """The real pipeline (``ivector_clusters`` with its pitch-aware options: MFCC + log-F0 stream, supervector
    space; what the demo passes; sizes fixed at 32 / 20 as measured) on a small espeak-ng
    corpus: 16 English pseudo-speakers (8 m / 8 f), 4 minutes, ~84 utterances.

    Measured with these settings over corpus seeds 0-7: purity 1.0, 1.0, 1.0, 0.988, 1.0, 0.929, 1.0, 1.0;
    speaker EER 0.03-0.10. The study's plain MFCC i-vectors (``pitch_weight=0, space="ivector"``) give
    0.54-0.75 on the same corpora (``benchmarks/ivector.md``).
    """
    from jaxneurons.data.audio import load_audio
    from jaxneurons.data.manifest import read_manifest
    from jaxneurons.data.synth import generate_corpus
    from jaxneurons.pipeline.labels import ivector_clusters

    utts = read_manifest(generate_corpus(str(tmp_path / "corpus"), 16, 4.0, ["en"], seed=0, progress=False))
    speakers = np.array([u.speaker for u in utts])
    female = np.array([u.gender == "f" for u in utts])
    assert female.sum() >= 0.4 * len(utts) and (~female).sum() >= 0.4 * len(utts)
    groups, vecs = ivector_clusters([load_audio(u.path) for u in utts], 2, num_components=32, ivector_dim=20,
                                    dims="fixed", pitch_weight=4.0, space="supervector")
    assert groups.shape == (len(utts),) and vecs.shape == (len(utts), 20)
    agreement = max(np.mean(groups == female), np.mean(groups != female))
    assert agreement >= 0.8, agreement  # chance is about 0.5
    eer = iv.pairwise_eer(vecs, speakers)
    assert eer < 0.2, eer  # chance is 0.5


def test_em_loops_and_statistics_report_progress(monkeypatch):
    """Each UBM / T-matrix EM iteration and each statistics batch moves its (jaxneurons.progress) bar."""
    done: dict[str, int] = {}

    def recording(iterable, desc="", **_):
        done[desc] = 0
        for item in iterable:
            done[desc] += 1  # counted as the loop consumes it, so a bar that skipped items would show
            yield item

    monkeypatch.setattr(iv, "progress", recording)
    rng = np.random.default_rng(2)
    utts = [rng.normal(0, 1, (40 + 10 * u, 2)).astype(np.float32) for u in range(5)]
    ubm, history = iv.train_ubm(np.concatenate(utts), 3, num_iters=4, chunk=1024)
    N, F = iv.collect_stats(ubm, utts, batch_size=2)
    iv.train_ivector_extractor(ubm, N, F, 2, num_iters=3, batch=8)
    assert done == {"UBM EM": 4, "Baum-Welch stats": 3, "T-matrix EM": 3} and len(history) == 4

"""A random-weight Whisper encoder through the scan and the heads analysis: only frames covering audio count.

Whisper's encoder runs on its whole window (here 5 s) whatever the utterance's length, so a batch's shorter
rows have encoder frames over silence. The scan's statistics and the per-utterance head metrics must equal
those of each utterance alone over its own ``ceil(n / 320)`` frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxneurons.data import load_audio
from jaxneurons.heads import head_metrics
from jaxneurons.models import SpeechConfig, build_model, forward_with_captures
from jaxneurons.pipeline.heads import HeadsConfig, run_heads
from jaxneurons.pipeline.scan import ScanOptions, plan_scan, scan_statistics
from jaxneurons.stats.spec import topk_size
from tests.helpers import TINY_CORPUS_SPEAKERS, run_python

# 250 positions: a 5-s window, longer than every utterance of the tiny corpus (conftest.py; <= 4.4 s).
TINY = SpeechConfig(family="whisper", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_mel_bins=80, max_source_positions=250)


@pytest.fixture(scope="module")
def manifest(tiny_manifest):
    return tiny_manifest


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return tiny_corpus


@pytest.fixture(scope="module")
def model():
    return build_model(TINY, seed=0)


def test_scan_counts_only_frames_covering_audio(model, corpus):
    options = ScanOptions(properties=("phone_type", "aape_speaker"), batch_size=3)
    plan = plan_scan(model, corpus, options)
    arrays = scan_statistics(model, corpus, plan, progress=False).to_numpy()
    n_ph, width = plan.inventory.size, TINY.intermediate_size
    k = topk_size(width, 0.01)
    ref_topk = np.zeros((TINY.num_hidden_layers, n_ph, width))
    ref_pos = np.zeros((TINY.num_hidden_layers, TINY_CORPUS_SPEAKERS, width))
    for i, u in enumerate(corpus):
        _, ffn, _ = forward_with_captures(model, load_audio(u.path)[None])
        lab = plan.utt_labels[i]
        sel = lab.middle & (lab.phone >= 0)
        speaker = plan.states["aape_speaker"]["classes"][i]
        for layer, h in enumerate(ffn):
            h = np.asarray(h[0])
            assert h.shape[0] == len(lab.phone) == -(-u.num_samples // 320)
            top = np.argsort(-np.abs(h), axis=1, kind="stable")[:, :k]
            for t in np.flatnonzero(sel):
                ref_topk[layer, lab.phone[t], top[t]] += 1
            ref_pos[layer, speaker] += (h > 0).sum(axis=0)
    assert np.abs(arrays["phone/topk"] - ref_topk).sum() <= 0.01 * ref_topk.sum()
    # Counted over every frame of the utterances: frames of the silent rest of the window would add to these.
    assert np.abs(arrays["aape_speaker/positive"] - ref_pos).sum() <= 1e-3 * ref_pos.sum()


def test_head_metrics_count_only_frames_covering_audio(model, corpus):
    options = HeadsConfig(batch_size=3, ablation=False)  # the ablation sweep runs in the CLI test
    analysis = run_heads(model, corpus, options)
    per_utt = analysis.metrics.utterance_metrics
    assert per_utt.shape == (len(corpus), 2, 2, 3) and np.isfinite(per_utt).all()
    np.testing.assert_array_equal(analysis.metrics.frame_lengths, [-(-u.num_samples // 320) for u in corpus])
    for i in (0, len(corpus) - 1):
        audio = load_audio(corpus[i].path)[None]
        out, _, attn = forward_with_captures(model, audio, capture_ffn=False, capture_attention=True)
        alone = np.asarray(head_metrics(np.stack(attn), np.asarray(out.frame_lengths)))[:, 0]
        np.testing.assert_allclose(per_utt[i], alone, atol=1e-4)


@pytest.mark.slow
def test_cli_convert_scan_and_heads_on_a_hf_whisper_dir(manifest, tmp_path):
    """``jaxneurons-convert --source <HF whisper dir>`` then ``jaxneurons scan`` and ``jaxneurons heads``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.WhisperConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=80,
        max_source_positions=250, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16, vocab_size=60,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=5).save_pretrained(tmp_path / "hf")
    commands = [
        ["-m", "checkpoints_convert.convert", f"--source={tmp_path / 'hf'}", f"--out={tmp_path / 'model'}"],
        ["-m", "jaxneurons.cli", "scan", f"--model={tmp_path / 'model'}", f"--manifest={manifest}",
         f"--out={tmp_path / 'scan'}", "--batch_size=8", "--properties=phone_type,gender"],
        ["-m", "jaxneurons.cli", "heads", f"--model={tmp_path / 'model'}", f"--manifest={manifest}",
         f"--out={tmp_path / 'heads'}", "--batch_size=4", "--noablation"],  # the ablation CLI: test_cli_heads
    ]
    for cmd in commands:
        run_python(cmd, devices=8)  # the batch of 8 sharded over 8 devices, as in the suite
    assert (tmp_path / "scan" / "neurons.json").exists() and (tmp_path / "heads" / "report.html").exists()

"""Agreement of ``jaxneurons.features.pitch.yin`` with pYAAPT (amfm_decompy) on a manifest's audio.

amfm_decompy is not a project dependency: install it into a scratch directory and point ``--yaapt_path``
at it (``pip install --no-deps --target /tmp/yaapt amfm_decompy``). YAAPT runs with the property-neuron
study's settings (35 ms frames every 20 ms, 71-800 Hz); its frame k is centred on sample ``320 k + 280``,
so YIN is evaluated at the same centres (``centre_offset=280``, ``num_frames`` = YAAPT's count).

Measured on every 16th utterance (25 utterances, 3 917 frames, YAAPT voiced fraction 0.712) of the
40-speaker English corpus of ``benchmarks/bench_ivector.py`` (``/tmp/bench_iv_corpus``, synth seed 0):

    python benchmarks/bench_pitch_yaapt.py --manifest /tmp/bench_iv_corpus/manifest.jsonl --every 16 \
        --thresholds 0.1,0.15,0.2,0.3

    =========  ==========  =========  ===================  ===========  ===========
    threshold  YIN voiced  voicing    median |rel diff|    within 5 %   within 20 %
                           agreement  (frames both voiced)
    =========  ==========  =========  ===================  ===========  ===========
    0.10       0.357       0.615      0.0129 (1338)        0.935        0.961
    0.15       0.478       0.721      0.0130 (1785)        0.932        0.958
    0.20       0.560       0.793      0.0133 (2085)        0.918        0.951
    0.30       0.660       0.875      0.0139 (2443)        0.877        0.925
    =========  ==========  =========  ===================  ===========  ===========

Where both call a frame voiced, F0 agrees to about 1.3 % (median); YIN's voicing decision is stricter than
YAAPT's at the paper-default threshold 0.1, so fewer frames enter the pitch bins.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

from jaxneurons.data.audio import load_audio
from jaxneurons.data.manifest import read_manifest
from jaxneurons.features.pitch import yin

FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "manifest.jsonl of 16 kHz audio")
flags.DEFINE_integer("every", 16, "use every n-th utterance")
flags.DEFINE_string("yaapt_path", "/tmp/yaapt", "directory amfm_decompy was pip-installed into")
flags.DEFINE_list("thresholds", ["0.1", "0.2", "0.3"], "YIN thresholds to compare")
flags.mark_flag_as_required("manifest")


def main(argv: list[str]) -> None:
    del argv
    sys.path.insert(0, FLAGS.yaapt_path)
    import amfm_decompy.basic_tools as basic
    import amfm_decompy.pYAAPT as pYAAPT  # noqa: N813

    utts = read_manifest(FLAGS.manifest)[:: FLAGS.every]
    refs, wavs = [], []
    for u in utts:
        x = load_audio(u.path)
        p = pYAAPT.yaapt(basic.SignalObj(x.astype(np.float64), 16000), frame_length=35.0, frame_space=20.0,
                         f0_min=71.0, f0_max=800.0)
        refs.append(np.asarray(p.samp_values))  # 0 = unvoiced
        wavs.append(x)
    print(f"utterances {len(utts)}, frames {sum(len(r) for r in refs)}, "
          f"YAAPT voiced fraction {np.mean(np.concatenate(refs) > 0):.3f}")
    for th in (float(t) for t in FLAGS.thresholds):
        agree, voiced, rel = [], [], []
        for x, fy in zip(wavs, refs, strict=True):
            f0, v, _ = yin(x, centre_offset=280, num_frames=len(fy), threshold=th)
            f0, v = np.asarray(f0), np.asarray(v)
            agree.append(v == (fy > 0))
            voiced.append(v)
            both = v & (fy > 0)
            rel.append(np.abs(f0[both] / fy[both] - 1))
        r = np.concatenate(rel)
        print(f"threshold {th:.2f}: YIN voiced {np.mean(np.concatenate(voiced)):.3f}, voicing agreement "
              f"{np.mean(np.concatenate(agree)):.3f}, both voiced {r.size} frames: median |rel diff| "
              f"{np.median(r):.4f}, within 5% {np.mean(r < 0.05):.3f}, within 20% {np.mean(r < 0.2):.3f}")


if __name__ == "__main__":
    app.run(main)

"""The README's main job (interim version): convert a small HF checkpoint and check parity with PyTorch.

    python -m jaxneurons.demo --workdir runs/demo
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes its files.")
FLAGS = flags.FLAGS


def main(_: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    import numpy as np
    import torch
    import transformers

    from checkpoints_convert.convert import convert
    from jaxneurons.models import forward_with_captures
    from jaxneurons.models.checkpoint import load_model

    os.makedirs(FLAGS.workdir, exist_ok=True)
    hf_dir = os.path.join(FLAGS.workdir, "hf-hubert-small")
    out_dir = os.path.join(FLAGS.workdir, "hubert-small")
    config = transformers.HubertConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
                                       intermediate_size=768)
    torch.manual_seed(0)
    hf = transformers.HubertModel(config).eval()
    hf.save_pretrained(hf_dir)
    report = convert(hf_dir, out_dir)
    print(f"converted {report['family']}: {report['num_parameters']:,} parameters -> {out_dir}")
    model = load_model(out_dir)
    audio = np.random.default_rng(0).standard_normal((2, 32000)).astype(np.float32) * 0.1
    with torch.inference_mode():
        expected = hf(torch.from_numpy(audio)).last_hidden_state.numpy()
    out, ffn, _ = forward_with_captures(model, audio)
    diff = float(np.abs(np.asarray(out.last_hidden_state) - expected).max())
    print(f"parity with transformers: max abs diff {diff:.2e} over {expected.size:,} values")
    print(f"captured FFN activations: {len(ffn)} layers x {tuple(ffn[0].shape)}")
    if diff > 1e-4:
        sys.exit("parity check FAILED")


if __name__ == "__main__":
    app.run(main)

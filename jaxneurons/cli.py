"""``jaxneurons COMMAND --flags``: one absl program per command, flags defined only for the chosen command.

    jaxneurons train   --manifest corpus/manifest.jsonl --out models/mine       # masked-prediction pre-training
    jaxneurons scan    --model models/mine --manifest corpus/manifest.jsonl --out results/scan
    jaxneurons heads   --model models/mine --manifest corpus/manifest.jsonl --out results/heads

``jaxneurons COMMAND --help`` lists a command's flags.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("jaxneurons.commands.train", "masked-prediction (continued) pre-training"),
    "scan": ("jaxneurons.commands.scan", "one pass over a dataset: activation statistics + neuron scoring"),
    "heads": ("jaxneurons.commands.heads", "attention-head metrics, typing and ablation"),
}


def usage() -> str:
    lines = ["usage: jaxneurons COMMAND [--flags]", "", "commands:"]
    lines += [f"  {name:8s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(usage(), file=sys.stderr)
        sys.exit(2)
    from absl import app

    module = importlib.import_module(COMMANDS[argv[1]][0])
    app.run(module.main, argv=[f"jaxneurons {argv[1]}", *argv[2:]])


if __name__ == "__main__":
    run()

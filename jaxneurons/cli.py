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
    "view": ("jaxneurons.commands.view", "serve a results directory as the neuron explorer on 127.0.0.1"),
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

    from jaxneurons.config_flags import register_as_key_flags
    from jaxneurons.errors import parse_flags, user_errors

    module = importlib.import_module(COMMANDS[argv[1]][0])
    program = f"jaxneurons {argv[1]}"
    sys.argv[0] = program  # absl's --help lists the key flags of the module named sys.argv[0]
    register_as_key_flags([module.__name__, *getattr(module, "FLAG_MODULES", ())])
    app.run(user_errors(module.main), argv=[program, *argv[2:]], flags_parser=parse_flags)  # bad input: one line


if __name__ == "__main__":
    run()

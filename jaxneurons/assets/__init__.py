"""Files shipped inside the package: the bundled default model."""

from __future__ import annotations

import os

ASSETS_DIR = os.path.dirname(os.path.abspath(__file__))


def default_model_path() -> str:
    """Directory of the bundled default model (a small MelHuBERT trained by ``experiments/train_default_model.sh``)."""
    path = os.path.join(ASSETS_DIR, "default_model")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: the bundled default model is missing from this installation")
    return path


def resolve_model_path(name: str) -> str:
    """``'default'`` -> the bundled model's directory; anything else is returned unchanged."""
    return default_model_path() if name == "default" else name

"""The Keras generator of a run, wherever a user keeps it: a run directory or a ``.keras`` file.

:func:`load_generator` gives the generator ([-1, 1] in and out) in float32; export
(:mod:`geco_tf.export.saved_model`, :mod:`geco_tf.export.tflite`) and ``geco-tf deartifact``
(:mod:`geco_tf.export.load`) build on it. It is its own module so that those import it in one
direction only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import geco_tf.models.generators  # noqa: F401 - registers the generator classes for loading
from geco_tf.errors import UserError

DEFAULT_IMAGE_SIZE = 64
GENERATOR_FILE = "generator.keras"


def _float32_generator(model: Any) -> Any:
    """Return ``model`` computing in float32.

    A generator trained under mixed precision may carry a float16 policy; exported graphs and
    TFLite files should compute in float32 (CPU has no fast float16, and parity is measured in
    float32), so rebuild from the config with a float32 policy and copy the weights over.
    """
    import keras

    policy = getattr(getattr(model, "dtype_policy", None), "name", "float32")
    if policy == "float32":
        return model
    config = model.get_config()
    config["dtype"] = "float32"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # sub-layers built in __init__ take the global policy
    try:
        clone = model.__class__.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    clone(np.zeros((1, 32, 32, 1), np.float32))
    clone.set_weights(model.get_weights())
    return clone


def _load_keras_file(path: Path) -> Any:
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # a corrupt or foreign file is the user's to fix
        raise UserError(f"{path}: cannot load the Keras generator ({type(exc).__name__}: {exc})") from None
    return _float32_generator(model)


def load_generator(source: Any) -> Any:
    """The Keras generator from a run directory (``RUN/generator.keras``), a ``.keras`` file, or
    an already built Keras model (returned as is, in float32)."""
    if hasattr(source, "predict") and hasattr(source, "get_config"):
        return _float32_generator(source)
    path = Path(source)
    if path.is_dir():
        candidate = path / GENERATOR_FILE
        if candidate.is_file():
            return _load_keras_file(candidate)
        if find_saved_model(path) is not None:
            raise UserError(f"{path}: is an exported SavedModel; export needs the run directory or its generator.keras")
        raise UserError(f"{path}: no {GENERATOR_FILE} here (is it a run directory written by `geco-tf train`?)")
    if path.is_file() and path.suffix == ".keras":
        return _load_keras_file(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    raise UserError(f"{path}: not a run directory or a .keras file")


def find_saved_model(path: str | os.PathLike) -> Path | None:
    """The SavedModel directory to use under ``path``: ``path`` itself if it holds
    ``saved_model.pb``, else the highest integer-named version below it (TF Serving's rule)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        return None
    versions = [p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def training_image_size(run_dir: str | os.PathLike) -> int:
    """The square size the generator was trained on (``RUN/config.json``), default 64.

    Looks for ``image_size`` at the top level or one level down, as the config's layout is
    the training code's to choose."""
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        return DEFAULT_IMAGE_SIZE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return DEFAULT_IMAGE_SIZE
    candidates = [config] + [v for v in config.values() if isinstance(v, dict)]
    for section in candidates:
        value = section.get("image_size")
        if isinstance(value, int) and value > 0:
            return value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], int):
            return int(value[0])
    return DEFAULT_IMAGE_SIZE

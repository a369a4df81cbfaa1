"""Load a generator from wherever a user keeps it: a run directory, a ``.keras`` file, or an
exported SavedModel (TF Serving layout or a single version directory).

:func:`load_generator` gives the Keras generator ([-1, 1] in and out) for export.
:func:`load_deartifactor` gives a callable in scanner units (raw in, raw out) for
``geco-tf deartifact``: either the exported graph itself or the same graph built around a Keras
generator, so both routes run identical normalisation code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from geco_tf.errors import UserError
from geco_tf.export.generator import (
    DEFAULT_IMAGE_SIZE,
    GENERATOR_FILE,
    find_saved_model,
    load_generator,
    training_image_size,
)
from geco_tf.export.saved_model import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME, ServingModule
from geco_tf.export.slices import Deartifactor

__all__ = [
    "DEFAULT_IMAGE_SIZE", "GENERATOR_FILE", "Deartifactor", "find_saved_model", "load_deartifactor",
    "load_generator", "training_image_size",
]  # fmt: skip


def load_deartifactor(model: str | os.PathLike | Any) -> tuple[Deartifactor, str]:
    """A function ``f(images [B, H, W, 1] float32 raw) -> same shape, raw`` and a description.

    ``model`` is a run directory, a ``.keras`` file, a Keras generator, an exported
    SavedModel (base path with version directories, or one version directory), or a function
    that is already raw -> raw (returned unchanged; tests pass stand-ins this way).
    """
    if callable(model) and not hasattr(model, "predict"):
        return model, getattr(model, "__name__", "a function")  # already raw -> raw
    if not hasattr(model, "predict"):
        path = Path(model)
        if not path.exists():
            raise UserError(f"--model: {path}: no such file or directory")
        saved = find_saved_model(path) if path.is_dir() and not (path / GENERATOR_FILE).is_file() else None
        if saved is not None:
            try:
                loaded = tf.saved_model.load(str(saved))
                signature = loaded.signatures[SIGNATURE_NAME]
            except Exception as exc:
                raise UserError(f"--model: {saved}: cannot load the SavedModel ({type(exc).__name__})") from None

            def run_saved(images: np.ndarray) -> np.ndarray:
                result = signature(**{INPUT_NAME: tf.constant(images, tf.float32)})
                return result[OUTPUT_NAME].numpy()

            run_saved.keep_alive = loaded  # type: ignore[attr-defined]
            return run_saved, f"SavedModel {saved}"
        description = f"Keras generator {path}"
    else:
        description = f"Keras generator {getattr(model, 'name', 'in memory')}"
    module = ServingModule(load_generator(model))

    def run_keras(images: np.ndarray) -> np.ndarray:
        return module.serve(tf.constant(images, tf.float32))[OUTPUT_NAME].numpy()

    return run_keras, description

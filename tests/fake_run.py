"""A fake run directory for the export and de-artifacting tests: a small random U-Net saved as
``RUN/generator.keras`` beside a minimal ``RUN/config.json`` (no training needed).

The U-Net does not start as the identity (``input_skip=False``) and every weight is perturbed, so
its output is far from the input everywhere: a parity check against it can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_random_run(path: Path, image_size: int = 32, seed: int = 3, **config) -> Path:
    """Write the run directory ``path`` (created) and return it; ``config`` adds keys to config.json."""
    import keras

    from geco_tf.models.generators import UNetGenerator

    keras.utils.set_random_seed(seed)
    generator = UNetGenerator(depth=2, base_filters=4, input_skip=False)
    generator(np.zeros((1, image_size, image_size, 1), np.float32))
    rng = np.random.default_rng(seed)
    generator.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in generator.get_weights()])
    path.mkdir(parents=True, exist_ok=True)
    generator.save(path / "generator.keras")
    (path / "config.json").write_text(json.dumps({"image_size": image_size, **config}))
    return path

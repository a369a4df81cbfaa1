"""G applied to a split held in memory, in batches, in inference mode.

The report, the audit and ``geco-tf evaluate --epoch`` all need "the generated version of these
slices"; this is the one function that makes it (batched, so a 3,000-slice split at 256 px does
not become one graph call; float32 whatever precision the generator computes in).
"""

from __future__ import annotations

import keras
import numpy as np

from geco_tf.progress import QUIET, Progress

#: Images per generator call.
GENERATE_BATCH = 64


def generate(
    generator: keras.Model | None,
    images: np.ndarray,
    batch_size: int = GENERATE_BATCH,
    progress: Progress = QUIET,
    desc: str = "generating",
) -> np.ndarray:
    """G(images) [N, H, W, 1] as float32, ``batch_size`` images per call, with a bar on
    ``progress``; ``generator=None`` returns the originals (as float32)."""
    images = np.asarray(images, np.float32)
    if generator is None or len(images) == 0:
        return images
    starts = range(0, len(images), batch_size)
    out = [
        np.asarray(generator(images[i : i + batch_size], training=False), np.float32)
        for i in progress.track(starts, total=len(starts), desc=desc)
    ]
    return np.concatenate(out)

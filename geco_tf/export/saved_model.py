"""SavedModel export: a graph that takes raw scanner slices and returns de-artifacted raw slices.

A client of TF Serving should not have to know the training convention, so everything lives
inside the graph (``serving_default`` signature, input ``images``, output ``deartifacted``, both
float32 ``[batch, height, width, 1]`` in the scanner's own units, any height and width):

1. per image: ``low`` = minimum, ``high`` = 99.5th percentile (numpy's default "linear"
   interpolation, computed with ``top_k`` so it is exact and cheap), the same rule as
   :func:`geco_tf.data.intensity.scale_to_unit_range`;
2. clip to ``[low, high]`` and scale to [-1, 1];
3. the generator (which pads to a multiple of ``2**depth`` with -1 and crops back itself);
4. inverse scaling ``low + (y + 1) / 2 * (high - low)``, **plus the part of the input that the
   clip removed** (``max(x - high, 0)``). Pixels above the 99.5th percentile are squashed to
   ``high`` by step 2; adding their excess back keeps them (nothing the scanner recorded is
   lost), keeps the map continuous at the clip threshold, and still applies the generator's
   edit to them. An identity generator therefore gives back the input exactly (up to float
   rounding).
5. A constant image (``high == low``, nothing to normalise) is returned unchanged.

The same function is used for the TFLite file (fixed size) and by ``geco-tf deartifact`` when
it is given a run directory, so the three paths cannot drift apart.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from geco_tf.data.intensity import CLIP_PERCENTILE, PAD_VALUE, scale_to_unit_range
from geco_tf.errors import UserError
from geco_tf.export.generator import load_generator
from geco_tf.io import atomic_path

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "deartifacted"


def _percentile_index(n: Any, q: float) -> tuple[Any, Any]:
    """Index and fraction of numpy's linear percentile, ``q / 100 * (n - 1)``, in exact integer
    arithmetic (float32 would shift the fraction by up to a few 1e-3 at 512x512).

    ``n`` is a Python int (static shapes, e.g. TFLite) or an int64 tensor (dynamic shapes).
    Returns ``(floor_index, fraction)``: ints/float or tensors accordingly.
    """
    frac_q = Fraction(str(q)) / 100
    num, den = frac_q.numerator, frac_q.denominator
    if isinstance(n, int):
        pos = num * (n - 1)
        return pos // den, (pos % den) / den
    pos = num * (n - 1)
    return pos // den, tf.cast(pos % den, tf.float32) / float(den)


def unit_range_stats(images: tf.Tensor, q: float = CLIP_PERCENTILE) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-image ``(low, high)``, each [B, 1, 1, 1]: the minimum and the ``q``-th percentile,
    falling back to the maximum when the percentile equals the minimum (as intensity.py does)."""
    static_hw = images.shape[1], images.shape[2]
    if static_hw[0] is not None and static_hw[1] is not None:
        n = int(static_hw[0]) * int(static_hw[1])
        flat = tf.reshape(images, [-1, n])
    else:
        flat = tf.reshape(images, [tf.shape(images)[0], -1])
        n = tf.cast(tf.shape(flat)[1], tf.int64)
    lo_idx, frac = _percentile_index(n, q)
    # The percentile sits among the top (n - lo_idx) values: top_k is far cheaper than a sort.
    k = n - lo_idx
    if isinstance(k, int):
        top = tf.math.top_k(flat, k=k, sorted=True).values
        a = top[:, k - 1]
        b = top[:, max(k - 2, 0)]
    else:
        k32 = tf.cast(k, tf.int32)
        top = tf.math.top_k(flat, k=k32, sorted=True).values
        a = tf.gather(top, k32 - 1, axis=1)
        b = tf.gather(top, tf.maximum(k32 - 2, 0), axis=1)
    diff = b - a
    # numpy's _lerp: interpolate from the nearer end, so the result is bit-identical more often.
    percentile = tf.where(frac >= 0.5, b - diff * (1.0 - frac), a + diff * frac)
    low = tf.reduce_min(flat, axis=1)
    high = tf.where(percentile > low, percentile, tf.reduce_max(flat, axis=1))
    return tf.reshape(low, [-1, 1, 1, 1]), tf.reshape(high, [-1, 1, 1, 1])


def raw_to_raw(generator: Any, images: tf.Tensor) -> tf.Tensor:
    """The whole serving computation (see the module docstring): raw slices in, raw slices out."""
    images = tf.cast(images, tf.float32)
    low, high = unit_range_stats(images)
    span = high - low
    valid = span > 0
    safe_span = tf.where(valid, span, tf.ones_like(span))
    scaled = (tf.clip_by_value(images, low, high) - low) / safe_span
    scaled = scaled * 2.0 - 1.0
    scaled = tf.where(valid, scaled, tf.fill(tf.shape(images), PAD_VALUE))
    y = tf.cast(generator(scaled, training=False), tf.float32)
    out = (y + 1.0) / 2.0 * safe_span + low + tf.nn.relu(images - high)
    out = tf.where(valid, out, images)
    return tf.ensure_shape(out, images.shape)


def reference_deartifact(generator: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same computation in numpy around the Keras generator, as the yardstick for parity.

    ``images`` is [B, H, W] or [B, H, W, 1] raw. The generator runs once on the whole batch:
    oneDNN chooses different convolution kernels for different batch sizes, so the same Keras
    model called on one image and on a batch of two differs by ~1e-5 (bit-exact with
    ``TF_ENABLE_ONEDNN_OPTS=0``); comparing like with like measures the export, not that.

    Returns ``(raw_out, generator_out, half_span)`` where ``generator_out`` is the Keras
    generator's own [-1, 1] output and ``half_span`` the per-image ``(high - low) / 2``: a
    raw-unit difference divided by it is a difference in generator units.
    """
    images = np.asarray(images, dtype=np.float32).reshape(len(images), images.shape[1], images.shape[2])
    scaled = np.stack([scale_to_unit_range(image) for image in images])[..., None]
    gens = np.asarray(generator(scaled, training=False), dtype=np.float32)[..., 0]
    outs, halves = [], []
    for image, y in zip(images, gens):
        low = float(image.min())
        high = float(np.percentile(image, CLIP_PERCENTILE))
        if high <= low:
            high = float(image.max())
        if high > low:
            out = (y + 1.0) / 2.0 * (high - low) + low + np.maximum(image - high, 0.0)
        else:
            out = image.copy()
        outs.append(out.astype(np.float32))
        halves.append(max(high - low, 1e-12) / 2.0)
    return np.stack(outs)[..., None], gens[..., None], np.array(halves, dtype=np.float64)


class ServingModule(tf.Module):
    """A ``tf.Module`` holding the generator and the raw-to-raw serving function."""

    def __init__(self, generator: Any) -> None:
        super().__init__(name="geco_serving")
        self.generator = generator

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name=INPUT_NAME)])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """``serving_default``: raw slices ``images`` -> ``{"deartifacted": raw slices}``."""
        return {OUTPUT_NAME: raw_to_raw(self.generator, images)}


def export_saved_model(run_or_generator: Any, out_dir: str | os.PathLike, version: int = 1) -> Path:
    """Write a SavedModel in TF Serving's layout, ``out_dir/<version>/saved_model.pb``.

    ``run_or_generator`` is a run directory, a ``.keras`` file or a Keras generator. The version
    directory is written under a temporary name and renamed, so TF Serving (which polls the base
    path) never sees half a model. Returns the version directory.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise UserError(f"--version: must be a non-negative integer, got {version!r}")
    generator = load_generator(run_or_generator)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--saved-model: {out_dir} exists and is a file, not a directory")
    module = ServingModule(generator)
    target = out_dir / str(version)
    with atomic_path(target) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: module.serve})
    return target

"""TFLite (LiteRT) export: the same raw-to-raw graph as the SavedModel, at one fixed size.

LiteRT runs best with static shapes, so the file takes ``[1, size, size, 1]`` float32 raw
slices (``size`` defaults to the training size in ``RUN/config.json``) and returns the same
shape in the same units. ``quantize="dynamic"`` stores weights as int8 (dynamic-range
quantization): about 4x smaller, but the int8 kernels also quantize activations on the fly,
which costs visible accuracy (docs/results.md). ``quantize="float16"`` stores weights as
float16 (2x smaller) and computes in float32: parity stays near the float32 file.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from geco_tf.errors import UserError
from geco_tf.export.generator import DEFAULT_IMAGE_SIZE, load_generator, training_image_size
from geco_tf.export.saved_model import INPUT_NAME, OUTPUT_NAME, raw_to_raw
from geco_tf.io import atomic_path

QUANTIZE_CHOICES = ("dynamic", "float16")


class _FixedSizeModule(tf.Module):
    def __init__(self, generator: Any, size: int) -> None:
        super().__init__(name="geco_tflite")
        self.generator = generator
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([1, size, size, 1], tf.float32, name=INPUT_NAME)]
        )

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: raw_to_raw(self.generator, images)}


@contextlib.contextmanager
def _builtin_equivalents() -> Iterator[None]:
    """While tracing, express TF ops that LiteRT has no builtin kernel for through ones it has.

    ``tf.math.atanh`` (used by ``UNetGenerator(input_skip=True)``) has no TFLite builtin and
    would need the Flex delegate, which the LiteRT wheel does not ship; ``0.5 * log((1 + x) /
    (1 - x))`` is the same function from builtins (LOG, DIV). Scoped to tracing and undone after.
    """
    original = tf.math.atanh

    def atanh(x, name=None):  # noqa: ARG001 - same signature as tf.math.atanh
        return 0.5 * tf.math.log((1.0 + x) / (1.0 - x))

    tf.math.atanh = atanh
    try:
        yield
    finally:
        tf.math.atanh = original


def export_tflite(
    run_or_generator: Any, path: str | os.PathLike, size: int | None = None, quantize: str | None = None
) -> Path:
    """Write a LiteRT flatbuffer taking ``[1, size, size, 1]`` raw slices; returns its path.

    ``run_or_generator`` is a run directory, a ``.keras`` file or a Keras generator; ``size``
    defaults to the run's training size (64 if unknown); ``quantize`` is None, "dynamic" or
    "float16".
    """
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise UserError(f"--quantize: unknown mode {quantize!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
    if size is None:
        is_path = isinstance(run_or_generator, (str, os.PathLike))
        size = (
            training_image_size(run_or_generator) if is_path and Path(run_or_generator).is_dir() else DEFAULT_IMAGE_SIZE
        )
    if int(size) < 1:
        raise UserError(f"--tflite-size: must be a positive integer, got {size}")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--tflite: {path} is a directory; give a file name such as geco.tflite")
    module = _FixedSizeModule(load_generator(run_or_generator), int(size))
    with _builtin_equivalents():
        concrete = module.serve.get_concrete_function()
    # No trackable object: the converter then freezes the captured weights into constants.
    # (Given the module it keeps them as resource variables, and the interpreter reads them
    # uninitialised: NaN outputs or a READ_VARIABLE failure.)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize in QUANTIZE_CHOICES:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # an op with no LiteRT builtin: say which, without the MLIR dump
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", str(exc))))
        if not ops:
            raise
        raise UserError(f"--tflite: the generator uses TF ops with no LiteRT builtin: {', '.join(ops)}") from None
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_bytes(flatbuffer)
    return path


def run_tflite(path: str | os.PathLike, images: Any) -> Any:
    """Run a file written by :func:`export_tflite` with the LiteRT interpreter, one image at a
    time (the file's batch is 1). ``images`` is [B, size, size, 1] float32; returns the same."""
    from ai_edge_litert.interpreter import Interpreter  # optional: only needed to run the file

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for image in np.asarray(images, dtype=np.float32):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(results)

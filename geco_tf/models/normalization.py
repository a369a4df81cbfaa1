"""Normalisation layers that run as one fused kernel on the TensorFlow backend.

Why: Keras 3's :class:`keras.layers.BatchNormalization` and :class:`keras.layers.GroupNormalization`
are written with backend-neutral ops (moments, then an element-wise normalise), so on TensorFlow
every call is several memory passes forward and more in the gradient (``Mean``, ``Sum``,
``SquaredDifference``, ``Tile``, ``Mul``). With the classifier's PReLU that was about 45% of the
op time of the 256 px GECO step (``docs/results.md``, Benchmarks). ``FusedBatchNormV3`` does the statistics, the
normalisation and its gradient in one oneDNN (CPU) or cuDNN (GPU) kernel each way.

* :class:`BatchNormalization` -- a :class:`keras.layers.BatchNormalization` subclass (same
  class name, variables, config, ``momentum``, ``trainable``/inference semantics, so ``isinstance`` checks,
  the DeepDicomSort weight loader and batch-norm recalibration keep working) whose ``call`` uses
  ``FusedBatchNormV3`` when it can: TensorFlow backend, channels-last 4-D/5-D input of
  float16/bfloat16/float32, no mask, ``synchronized=False``, ``renorm=False``, not under XLA
  (``jit_compile``: XLA fuses the plain ops itself, and faster). Anything else falls back to the
  parent's code. The moving statistics are updated exactly as Keras does
  (``moving = moving * momentum + batch * (1 - momentum)`` with the *biased* batch variance).
* :class:`InstanceNormalization` -- per-sample, per-channel normalisation over H and W with a
  learned per-channel ``gamma``/``beta``: ``GroupNormalization(groups=-1, epsilon=1e-5)``'s
  computation and variables. In training mode (the GECO step) it runs ``FusedBatchNormV3`` on
  the tensor rearranged to ``[1, H, W, B*C]`` (one "channel" per sample and channel; any batch
  size and H, W); forward + backward at the U-Net's 256 px shapes this measured 1.15-1.8x faster
  than ``GroupNormalization`` (a kernel per sample on slices of the batch was no faster inside
  the GECO step). In inference mode, and under XLA, it computes moments and one multiply-add,
  plain ops that every exporter (SavedModel, TFLite builtins) handles and XLA fuses. Both give
  the same values to float32 rounding.
"""

from __future__ import annotations

import keras
from keras import initializers, layers

PACKAGE = "geco_tf"
#: Input dtypes ``FusedBatchNormV3`` takes (half types with float32 scale, offset and statistics).
FUSED_DTYPES = ("float16", "bfloat16", "float32")


def _tf():
    import tensorflow as tf

    return tf


def _fusable_dtype(dtype) -> bool:
    return keras.backend.standardize_dtype(dtype) in FUSED_DTYPES


def _in_xla_compile() -> bool:
    """True while tracing a function that XLA compiles (``tf.function(jit_compile=True)``).

    XLA fuses the plain ops itself, and its expansion of ``FusedBatchNormV3`` (plus the
    transposes of the instance norm) measured 15-20% slower per GECO step at 256 px on CPU, so
    both layers use the plain ops there. Uses TensorFlow's own (private) XLA-context check, as
    tf.keras 2 did; if it ever moves, the fused kernels are used under XLA too (correct, slower).
    """
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()))
    except (ImportError, AttributeError):  # pragma: no cover - TensorFlow internals moved
        return False


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(layers.BatchNormalization):
    """:class:`keras.layers.BatchNormalization` computed by ``FusedBatchNormV3`` on TensorFlow.

    The class keeps Keras's name on purpose: a ``.keras`` file addresses the layers it finds in
    a list (``ConvBackbone.norms``) by their class name, so with any other name the files saved
    before this class existed would no longer load.

    Same constructor, variables (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) and
    behaviour; only the kernel differs. Training mode (``training=True`` and ``trainable``)
    normalises with the batch statistics and moves the moving statistics by ``momentum``
    (read at call time, so setting ``layer.momentum`` later works); otherwise the moving
    statistics are used. Falls back to the parent's implementation for masks,
    ``synchronized=True`` (cross-replica statistics), ``renorm``, a non-last ``axis``, ranks
    other than 4 and 5, other dtypes, other backends, and inside XLA-compiled functions.
    """

    def _fused(self, inputs, mask) -> bool:
        if keras.backend.backend() != "tensorflow" or mask is not None or self.synchronized or self.renorm:
            return False
        ndim = len(inputs.shape)
        if ndim not in (4, 5) or self.axis not in (-1, ndim - 1) or not _fusable_dtype(inputs.dtype):
            return False
        return not _in_xla_compile()

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        tf = _tf()
        x = tf.convert_to_tensor(inputs)
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels], "float32")
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels], "float32")
        data_format = "NHWC" if len(x.shape) == 4 else "NDHWC"
        if training and self.trainable:
            empty = tf.constant([], "float32")
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=scale,
                offset=offset,
                mean=empty,
                variance=empty,
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format=data_format,
                is_training=True,
            )
            # The op returns the unbiased (n / (n - 1)) batch variance for the moving average;
            # Keras averages the biased one, which is also what normalised this batch.
            n = tf.cast(tf.size(x, out_type=tf.int64) // channels, "float32")
            variance = variance * (tf.maximum(n - 1.0, 1.0) / n)
            momentum = self.momentum
            for var, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moved = tf.cast(var, "float32") * momentum + batch * (1.0 - momentum)
                var.assign(tf.cast(moved, var.dtype))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=scale,
                offset=offset,
                mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format=data_format,
                is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class InstanceNormalization(layers.Layer):
    """Instance normalisation over the spatial axes of channels-last input, with a learned
    per-channel scale ``gamma`` and offset ``beta``.

    ``y = (x - mean_hw) / sqrt(var_hw + epsilon) * gamma + beta`` per sample and channel, the
    computation and variables of ``keras.layers.GroupNormalization(groups=-1)``. The statistics
    are always the sample's own (there are no moving statistics), so training and inference
    compute the same function; training mode uses the fused kernel (see the module docstring).
    Statistics are computed in float32 for float16/bfloat16 inputs.
    """

    def __init__(
        self,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.supports_masking = True
        self.gamma = None
        self.beta = None

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"InstanceNormalization needs a known channel count; got input shape {input_shape}")
        if len(input_shape) < 3:
            raise ValueError(f"InstanceNormalization needs [batch, *spatial, channels] input; got {input_shape}")
        if self.scale:
            self.gamma = self.add_weight(
                shape=(channels,), name="gamma", initializer=self.gamma_initializer, autocast=False
            )
        if self.center:
            self.beta = self.add_weight(
                shape=(channels,), name="beta", initializer=self.beta_initializer, autocast=False
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=3, axes={-1: channels})

    def compute_output_shape(self, input_shape):
        return input_shape

    def _gamma_beta(self, channels: int):
        ops = keras.ops
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones([channels], "float32")
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros([channels], "float32")
        return gamma, beta

    def call(self, inputs, training=None):
        if (
            training
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and _fusable_dtype(inputs.dtype)
            and not _in_xla_compile()
        ):
            return self._call_fused(inputs)
        return self._call_moments(inputs)

    def _call_fused(self, inputs):
        """[B, H, W, C] -> [1, H, W, B*C]: batch norm over H, W of each (sample, channel)."""
        tf = _tf()
        x = tf.convert_to_tensor(inputs)
        channels = x.shape[-1]
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        gamma, beta = self._gamma_beta(channels)
        xt = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), tf.stack([1, h, w, b * channels]))
        empty = tf.constant([], "float32")
        y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=xt,
            scale=tf.tile(gamma, [b]),
            offset=tf.tile(beta, [b]),
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        y = tf.transpose(tf.reshape(y, tf.stack([h, w, b, channels])), [2, 0, 1, 3])
        return tf.cast(y, self.compute_dtype)

    def _call_moments(self, inputs):
        """Moments over the spatial axes, then one multiply-add (backend-neutral ops)."""
        ops = keras.ops
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axes = list(range(1, len(x.shape) - 1))
        mean, variance = ops.moments(x, axes=axes, keepdims=True)
        gamma, beta = self._gamma_beta(x.shape[-1])
        inv = ops.rsqrt(variance + self.epsilon) * ops.cast(gamma, x.dtype)
        y = x * inv + (ops.cast(beta, x.dtype) - mean * inv)
        return ops.cast(y, self.compute_dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
        }

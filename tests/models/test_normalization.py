"""The fused normalisation layers compute what the Keras layers they replace compute.

geco_tf's BatchNormalization (FusedBatchNormalization here) against keras.layers.BatchNormalization, InstanceNormalization against
keras.layers.GroupNormalization(groups=-1): outputs and gradients (input, gamma, beta) in
training and inference mode, eagerly and inside tf.function (where oneDNN rewrites the fused op),
the moving statistics after several updates, mixed precision, serialisation.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from geco_tf.models.normalization import BatchNormalization as FusedBatchNormalization
from geco_tf.models.normalization import InstanceNormalization

RNG = np.random.default_rng(0)
# small H*W*B (n = 4*6*5 = 120) so that a biased/unbiased variance mix-up (factor 1.008) shows
X = (RNG.normal(size=(4, 6, 5, 3)) * [0.5, 2.0, 1.0] + [1.0, -2.0, 0.0]).astype("float32")
DY = RNG.normal(size=X.shape).astype("float32")


def _pair(reference: keras.layers.Layer, fused: keras.layers.Layer, shape=X.shape):
    """Build both layers and give them the same (random) gamma and beta."""
    reference.build(shape)
    fused.build(shape)
    channels = reference.gamma.shape[0]
    for name in ("gamma", "beta"):
        value = RNG.uniform(0.5, 1.5, channels) if name == "gamma" else RNG.normal(size=channels)
        getattr(reference, name).assign(value.astype("float32"))
        getattr(fused, name).assign(value.astype("float32"))
    return reference, fused


def _out_and_grads(layer, x, training, compiled):
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * DY)
        return y, tape.gradient(loss, [x, layer.gamma, layer.beta])

    if compiled:
        run = tf.function(run)
    y, grads = run(tf.constant(x))
    return np.asarray(y), [np.asarray(g) for g in grads]


def _assert_close(got, expected, rtol=1e-5, atol=1e-5):
    (y1, g1), (y0, g0) = got, expected
    np.testing.assert_allclose(y1, y0, rtol=rtol, atol=atol)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_fused_batch_norm_matches_keras_in_training_and_inference(compiled):
    ref, fused = _pair(keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9))
    assert isinstance(fused, keras.layers.BatchNormalization)
    assert [w.path.split("/")[-1] for w in fused.weights] == [w.path.split("/")[-1] for w in ref.weights]
    for step in range(3):  # three updates of the moving statistics, different batches
        x = X * (1.0 + 0.3 * step) + step
        _assert_close(_out_and_grads(fused, x, True, compiled), _out_and_grads(ref, x, True, compiled))
        np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(ref.moving_variance.numpy(), 1.0)  # they did move
    _assert_close(_out_and_grads(fused, X, False, compiled), _out_and_grads(ref, X, False, compiled))


def test_fused_batch_norm_honours_momentum_set_later_and_frozen_layers():
    ref, fused = _pair(keras.layers.BatchNormalization(), FusedBatchNormalization())
    for layer in (ref, fused):
        layer.momentum = 0.0  # as recalibrate_batch_norm does: the batch statistics replace
        layer(X, training=True)
    np.testing.assert_allclose(fused.moving_mean.numpy(), X.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), X.var(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-6)
    before = fused.moving_mean.numpy().copy()
    fused.trainable = False  # frozen: inference mode even with training=True, no update
    ref.trainable = False
    np.testing.assert_allclose(
        np.asarray(fused(X + 5, training=True)), np.asarray(ref(X + 5, training=True)), atol=1e-5
    )
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)


@pytest.mark.parametrize(
    "kwargs,call",
    [({"synchronized": True}, {}), ({"axis": 1}, {}), ({}, {"mask": np.ones(X.shape[:-1], bool)})],
    ids=["synchronized", "axis1", "mask"],
)
def test_fused_batch_norm_falls_back_to_keras(kwargs, call):
    ref, fused = _pair(keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs))
    np.testing.assert_allclose(
        np.asarray(fused(X, training=True, **call)), np.asarray(ref(X, training=True, **call)), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-6)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_instance_norm_matches_group_norm(training, compiled):
    ref, inorm = _pair(keras.layers.GroupNormalization(groups=-1, epsilon=1e-5), InstanceNormalization(epsilon=1e-5))
    assert [w.path.split("/")[-1] for w in inorm.weights] == [w.path.split("/")[-1] for w in ref.weights]
    _assert_close(_out_and_grads(inorm, X, training, compiled), _out_and_grads(ref, X, training, compiled))


def test_instance_norm_fused_path_with_unknown_shapes():
    """The generator runs on any H, W (and the exported graph has a free batch dimension)."""
    ref, inorm = _pair(keras.layers.GroupNormalization(groups=-1, epsilon=1e-5), InstanceNormalization())
    run = tf.function(lambda x: inorm(x, training=True), input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_allclose(np.asarray(run(X)), np.asarray(ref(X)), rtol=1e-5, atol=1e-5)


def test_layers_under_xla_use_the_plain_ops_and_match_keras():
    """Under jit_compile the layers take the plain-op path (XLA fuses it, faster than its
    FusedBatchNormV3 expansion), with the same values and moving-statistics update."""
    pairs = [
        _pair(keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)),
        _pair(keras.layers.GroupNormalization(groups=-1, epsilon=1e-5), InstanceNormalization()),
    ]
    for ref, layer in pairs:

        @tf.function(jit_compile=True)
        def run(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * DY)
            return y, tape.gradient(loss, [x, layer.gamma, layer.beta])

        y, grads = run(tf.constant(X))
        graph = run.get_concrete_function(tf.constant(X)).graph
        assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
        _assert_close((np.asarray(y), [np.asarray(g) for g in grads]), _out_and_grads(ref, X, True, compiled=False))
        if isinstance(ref, keras.layers.BatchNormalization):
            np.testing.assert_allclose(layer.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_variables(policy):
    old = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        layers = [
            (FusedBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)),
            (InstanceNormalization(), keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)),
        ]
    finally:
        keras.mixed_precision.set_dtype_policy(old)
    half = policy.split("_")[1]
    tol = 2e-2 if half == "bfloat16" else 5e-3
    for fused, ref in layers:
        _pair(ref, fused)
        assert all(w.dtype == "float32" for w in fused.weights)
        x = tf.cast(X, half)
        for training in (True, False):
            got, expected = _out_and_grads(fused, x, training, True), _out_and_grads(ref, x, training, True)
            assert got[0].dtype == np.dtype(half) or str(got[0].dtype) == half
            np.testing.assert_allclose(got[0].astype("float32"), expected[0].astype("float32"), atol=tol * 4)
            for a, b in zip(got[1][1:], expected[1][1:]):  # gamma, beta gradients: float32
                assert a.dtype == np.float32
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))
        if isinstance(fused, FusedBatchNormalization):
            np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=tol)


def test_config_round_trip():
    for layer in (FusedBatchNormalization(momentum=0.9, epsilon=1e-4, name="bn"), InstanceNormalization(epsilon=1e-3)):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(again) is type(layer) and again.get_config() == layer.get_config()

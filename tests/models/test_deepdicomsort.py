"""DeepDicomSort's legacy Keras HDF5 weights: exact loading, and refusal of every bad file.

The fixture is written with h5py alone in the layout tf.keras of the TensorFlow 1.x era used for
``model.save`` (``model_weights`` group, byte-string ``layer_names`` / ``weight_names`` attributes,
``conv2d_1/kernel:0``-style datasets in a nested group), with random weights, so the test proves
where each array lands without depending on the code under test to write it.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from dds_hdf5 import LAYERS, legacy_arrays, write_legacy_hdf5

from geco_tf.errors import UserError
from geco_tf.models.classifiers import DDSClassifier
from geco_tf.models.deepdicomsort import (
    build_original_model,
    dds_input_layers,
    load_backbone,
    read_dds_hdf5,
    registry_layers,
)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    arrays = legacy_arrays()
    path = tmp_path_factory.mktemp("dds") / "model_all_brain_tumor_data.hdf5"
    write_legacy_hdf5(path, arrays)
    return path, arrays


def _prelu(x, alpha):
    return np.where(x >= 0, x, alpha * x)


def _conv_valid(x, kernel, bias):
    """[H, W, C] valid 5x5 convolution in NumPy (cross-correlation, as Keras)."""
    k = kernel.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(0, 1))  # [H', W', C, k, k]
    return np.einsum("hwcij,ijco->hwo", windows, kernel) + bias


def test_legacy_layout_loads_into_dds_backbone_exactly(legacy):
    path, arrays = legacy
    weights = read_dds_hdf5(path)
    assert [layer.name for layer in weights.layers][:3] == ["conv2d_1", "batch_normalization_1", "p_re_lu_1"]
    assert len(weights.sha256) == 64
    clf = DDSClassifier(3, padding="valid", prelu_shared_axes=None, dropout=0.4)
    clf(np.zeros((1, 256, 256, 1), np.float32))
    load_backbone(clf.backbone, weights)

    # First conv + BN (inference) + PReLU in NumPy with the fixture's arrays.
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (256, 256, 1)).astype(np.float32)
    c, b, p = arrays["conv2d_1"], arrays["batch_normalization_1"], arrays["p_re_lu_1"]
    conv = _conv_valid(image, c["kernel"], c["bias"])
    bn = (conv - b["moving_mean"]) / np.sqrt(b["moving_variance"] + 1e-3) * b["gamma"] + b["beta"]
    expected = _prelu(bn, p["alpha"])
    bb = clf.backbone
    got = bb.prelus[0](bb.norms[0](bb.convs[0](image[None]), training=False)).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    # Every backbone variable equals its fixture array (nothing left at its initial value).
    for i in range(6):
        n = i + 1
        np.testing.assert_array_equal(bb.convs[i].kernel.numpy(), arrays[f"conv2d_{n}"]["kernel"])
        np.testing.assert_array_equal(bb.norms[i].moving_variance.numpy(), arrays[f"batch_normalization_{n}"]["moving_variance"])
        np.testing.assert_array_equal(bb.prelus[i].alpha.numpy(), arrays[f"p_re_lu_{n}"]["alpha"])


def test_full_original_model_with_tag_input_matches_numpy_head(legacy):
    path, arrays = legacy
    model = build_original_model(read_dds_hdf5(path))
    assert [inp.shape for inp in model.inputs] == [(None, 256, 256, 1), (None, 1)]
    assert model.output.shape == (None, 8)
    image = np.random.default_rng(2).uniform(0, 1, (2, 256, 256, 1)).astype(np.float32)
    tag = np.array([[0.0], [1.0]], np.float32)
    features = keras_features(model, image)
    merged = np.concatenate([features, tag], axis=1)  # concatenation order: image features, then tag
    d1, d2, d3 = arrays["dense_1"], arrays["dense_2"], arrays["dense_3"]
    h1 = merged @ d1["kernel"] + d1["bias"]  # dense_1: linear
    h2 = np.maximum(h1 @ d2["kernel"] + d2["bias"], 0)  # dense_2: relu
    logits = h2 @ d3["kernel"] + d3["bias"]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(model([image, tag], training=False).numpy(), expected, rtol=1e-3, atol=1e-5)


def keras_features(model, image):
    import keras

    flat = keras.Model(model.inputs[0], model.get_layer("flatten_1").output)
    return flat(image, training=False).numpy()


def test_save_weights_layout_chunked_names_and_any_layer_names_load_by_structure(tmp_path):
    arrays = legacy_arrays(seed=3)
    renamed = {k.replace("_1", "_7") if k.endswith("_1") else k: v for k, v in arrays.items()}
    names = [n.replace("_1", "_7") if n.endswith("_1") else n for n in LAYERS]
    path = tmp_path / "w.h5"
    write_legacy_hdf5(path, renamed, layer_names=names, weights_group=False, chunk_names=True)
    weights = read_dds_hdf5(path)
    assert weights.layers[0].name == "conv2d_7"
    np.testing.assert_array_equal(weights.layers[0].weights["kernel"], arrays["conv2d_1"]["kernel"])


def _adapt(x):
    for layer in dds_input_layers(x.shape[1]):
        x = layer(x)
    return np.asarray(x)


def test_input_layers_bring_any_size_to_256_in_unit_range():
    x = np.full((1, 64, 64, 1), -1.0, np.float32)
    x[0, 16:48, 16:48, 0] = 1.0
    y = _adapt(x)
    assert y.shape == (1, 256, 256, 1)
    assert y.min() == 0.0 and y.max() == 1.0
    assert y[0, 128, 128, 0] == 1.0 and y[0, 2, 2, 0] == 0.0  # centre stays bright, padding black
    assert _adapt(np.zeros((1, 512, 512, 1), np.float32)).shape == (1, 256, 256, 1)
    assert [type(layer).__name__ for layer in dds_input_layers(256)] == ["Rescaling"]  # 256: no resampling


def test_registry_lists_every_layer_and_shape():
    from geco_tf_weights import entry

    e = entry("deepdicomsort_brain_tumor")
    assert e["file"] == "model_all_brain_tumor_data.hdf5" and e["sha256"] == ""
    assert e["layers"] == registry_layers()
    shapes = {w: tuple(s) for layer in e["layers"] for w, s in layer["weights"].items()}
    assert shapes["p_re_lu_1/alpha:0"] == (252, 252, 32) and shapes["dense_1/kernel:0"] == (1601, 1024)


# ---- bad files -------------------------------------------------------------------------------


def _bad(tmp_path, mutate):
    arrays = legacy_arrays(seed=4)
    names = list(LAYERS)
    mutate(arrays, names)
    path = tmp_path / "bad.hdf5"
    write_legacy_hdf5(path, arrays, layer_names=names)
    return path


def test_wrong_alpha_shape_names_layer_and_both_shapes(tmp_path):
    def mutate(arrays, names):
        arrays["p_re_lu_3"]["alpha"] = np.zeros((60, 60, 64), np.float32)

    with pytest.raises(UserError, match=r"'p_re_lu_3'.*\(60, 60, 64\).*expected \(78, 78, 64\)"):
        read_dds_hdf5(_bad(tmp_path, mutate))


def test_wrong_conv_kernel_shape_refused(tmp_path):
    def mutate(arrays, names):
        arrays["conv2d_2"]["kernel"] = np.zeros((3, 3, 32, 32), np.float32)

    with pytest.raises(UserError, match=r"'conv2d_2'.*'kernel'.*\(3, 3, 32, 32\).*expected \(5, 5, 32, 32\)"):
        read_dds_hdf5(_bad(tmp_path, mutate))


def test_missing_layer_is_a_structure_error_not_a_partial_load(tmp_path):
    def mutate(arrays, names):
        names.remove("batch_normalization_4")

    with pytest.raises(UserError, match=r"'p_re_lu_4'.*PReLU where DeepDicomSort has a BatchNormalization"):
        read_dds_hdf5(_bad(tmp_path, mutate))


def test_truncated_head_refused(tmp_path):
    def mutate(arrays, names):
        names.remove("dense_3")

    with pytest.raises(UserError, match=r"only 20 weighted layers.*missing the Dense layer after 'dense_2'"):
        read_dds_hdf5(_bad(tmp_path, mutate))


def test_model_built_for_other_size_is_refused_naming_both_shapes(legacy):
    path, _ = legacy
    clf = DDSClassifier(3, padding="valid", prelu_shared_axes=None)
    clf(np.zeros((1, 200, 200, 1), np.float32))
    before = clf.backbone.convs[0].kernel.numpy().copy()
    with pytest.raises(UserError, match=r"'p_re_lu_1'.*\(252, 252, 32\).*expects \(196, 196, 32\)"):
        load_backbone(clf.backbone, read_dds_hdf5(path))
    np.testing.assert_array_equal(clf.backbone.convs[0].kernel.numpy(), before)  # nothing assigned


def test_not_hdf5_missing_group_and_truncated_files(tmp_path, legacy):
    text = tmp_path / "notes.hdf5"
    text.write_text("not a weights file\n")
    with pytest.raises(UserError, match="not an HDF5 file"):
        read_dds_hdf5(text)
    with pytest.raises(UserError, match="does not exist"):
        read_dds_hdf5(tmp_path / "absent.hdf5")
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f.create_group("something_else")
    with pytest.raises(UserError, match="no 'model_weights' group"):
        read_dds_hdf5(empty)
    path, _ = legacy
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated|cannot read|missing"):
        read_dds_hdf5(truncated)

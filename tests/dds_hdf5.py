"""DeepDicomSort weight files as Keras 2.1/2.2 wrote them, made with h5py alone: random weights
of the published shapes, for the tests of the HDF5 reader (``tests/models``) and of the
pretrained baseline (``tests/training``)."""

from __future__ import annotations

import json

import h5py
import numpy as np

# Keras-2 layer order of the functional DeepDicomSort model: weightless layers interleaved (the
# tag branch sits at its graph depth, between the convolutions and the head).
LAYERS = ["input_1"]
for _n, _f in enumerate((32, 32, 64, 64, 64, 64), start=1):
    LAYERS += [f"conv2d_{_n}", f"batch_normalization_{_n}", f"p_re_lu_{_n}"]
    if _n % 2 == 0:
        LAYERS.append(f"max_pooling2d_{_n // 2}")
LAYERS[LAYERS.index("max_pooling2d_3"):LAYERS.index("max_pooling2d_3")] = ["input_2", "dropout_1"]
LAYERS += ["flatten_1", "concatenate_1", "dropout_2", "dense_1", "dense_2", "dropout_3", "dense_3"]


def legacy_arrays(seed: int = 0, size: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """Random DeepDicomSort weights keyed by Keras-2 layer name, shapes written out by hand."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    chans, spatial = 1, size
    for n, filters in enumerate((32, 32, 64, 64, 64, 64), start=1):
        spatial -= 4
        arrays[f"conv2d_{n}"] = {
            "kernel": rng.normal(0, 0.2, (5, 5, chans, filters)),
            "bias": rng.normal(0, 0.1, (filters,)),
        }
        arrays[f"batch_normalization_{n}"] = {
            "gamma": rng.uniform(0.5, 1.5, (filters,)),
            "beta": rng.normal(0, 0.1, (filters,)),
            "moving_mean": rng.normal(0, 0.5, (filters,)),
            "moving_variance": rng.uniform(0.5, 2.0, (filters,)),
        }
        arrays[f"p_re_lu_{n}"] = {"alpha": rng.uniform(0.0, 0.5, (spatial, spatial, filters))}
        chans = filters
        if n % 2 == 0:
            spatial //= 3
    flat = spatial * spatial * 64 + 1
    for n, (fan_in, units) in enumerate([(flat, 1024), (1024, 1024), (1024, 8)], start=1):
        arrays[f"dense_{n}"] = {"kernel": rng.normal(0, 0.03, (fan_in, units)), "bias": rng.normal(0, 0.1, (units,))}
    return {k: {w: a.astype(np.float32) for w, a in v.items()} for k, v in arrays.items()}


def write_legacy_hdf5(path, arrays, layer_names=None, weights_group=True, chunk_names=False) -> None:
    """Write ``arrays`` the way Keras 2.1/2.2 ``save_model`` did (h5py only); ``chunk_names``
    splits ``layer_names`` into ``layer_names0``, ``layer_names1``, ... as Keras did past 64 KB."""
    layer_names = LAYERS if layer_names is None else layer_names
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.1.6-tf"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"name": "model_1"}}).encode()
        group = f.create_group("model_weights") if weights_group else f
        encoded = np.array([n.encode("utf8") for n in layer_names])
        if chunk_names:
            for i, part in enumerate(np.array_split(encoded, 3)):
                group.attrs[f"layer_names{i}"] = part
        else:
            group.attrs["layer_names"] = encoded
        group.attrs["backend"] = b"tensorflow"
        group.attrs["keras_version"] = b"2.1.6-tf"
        for name in layer_names:
            g = group.create_group(name)
            weights = arrays.get(name, {})
            if not weights:
                g.attrs["weight_names"] = np.array([])  # Keras 2 stored [] as an empty float array
                continue
            names = [f"{name}/{w}:0" for w in weights]
            g.attrs["weight_names"] = np.array([n.encode("utf8") for n in names])
            for full, array in zip(names, weights.values()):
                g.create_dataset(full, data=array)  # "conv2d_1/kernel:0" -> nested group conv2d_1

"""DeepDicomSort's published Keras weights, read safely and loaded into :class:`DDSClassifier`.

The paper's baseline (section 3.2) is DeepDicomSort (Klein et al. 2021, Neuroinformatics), a
scan-type classifier whose weights are published as ``Trained_Models/model_all_brain_tumor_data.hdf5``
in the DeepDicomSort GitHub repository. That file was written by ``model.save`` of tf.keras in the
TensorFlow 1.x era (Keras 2 HDF5 layout)::

    /model_weights                      attrs: layer_names = [b"input_1", b"conv2d_1", ...]
      /conv2d_1                         attrs: weight_names = [b"conv2d_1/kernel:0", b"conv2d_1/bias:0"]
        /conv2d_1/kernel:0              float32 [5, 5, 1, 32]
      /batch_normalization_1            gamma, beta, moving_mean, moving_variance [32]
      /p_re_lu_1                        alpha [252, 252, 32]  (one alpha per position and channel)
      ...                               6 x (conv, BN, PReLU), then dense_1 [1601, 1024], dense_2, dense_3 [1024, 8]

The original model (``CNN_model/CNN_models.py`` there, rebuilt by :func:`build_original_model`)
has two inputs, a 256x256x1 image with intensities rescaled to [0, 1] per volume and one DICOM-tag
scalar (1 when the series was 4-D, else 0; dropout 0.25), six Conv2D 5x5 'valid' 32-32-64-64-64-64
each followed by BatchNormalization and PReLU, MaxPooling 3x3 after each pair, Flatten,
concatenation with the tag, Dropout 0.4, Dense 1024, Dense 1024 relu, Dropout 0.4, Dense 8 softmax.

Why this module reads the file with h5py instead of ``keras.models.load_model``: a Keras HDF5 file
carries a model config that Keras would deserialize (Lambda layers hold marshalled Python code),
and Keras 3 no longer reads the TF-1-era config anyway. Here only arrays are read; nothing in the
file is executed. Layers are matched by *structure and order* -- the sequence of weighted layers
must be exactly (conv, BN, PReLU) x 6 then dense x 3 -- not by name, because Keras numbers names
per session (a model built second gets ``conv2d_7``). Every array's shape is checked before
anything is assigned, and any mismatch raises :class:`~geco_tf.errors.UserError` naming the layer
and both shapes: a partial load is never possible.

Other image sizes: the per-position PReLU alphas tie the backbone to 256x256 inputs. The baseline
therefore brings every slice to 256x256 with :func:`dds_input_layers` (bilinear resampling of the
whole slice and [-1, 1] -> [0, 1]), which is what DeepDicomSort's own preprocessing does
(it resamples each volume in-plane to 256x256 and rescales intensities to [0, 1]). Resampling the
alphas instead would keep the image at its own scale but change what every 5x5 filter sees
relative to the anatomy the weights were trained on; see ``docs/baseline.md``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import layers

from geco_tf.errors import UserError
from geco_tf.models.backbone import CONV_FILTERS, KERNEL, POOL, ConvBackbone

#: The image size the published weights were trained on (the PReLU alphas depend on it).
ORIGINAL_INPUT_SIZE = 256
#: DeepDicomSort's eight scan types, in label order (its README).
ORIGINAL_CLASSES = (
    "pre-contrast T1-weighted",
    "post-contrast T1-weighted",
    "T2-weighted",
    "proton density weighted",
    "T2-weighted FLAIR",
    "diffusion weighted imaging",
    "derived imaging",
    "perfusion weighted DSC",
)
#: One DICOM-tag scalar is concatenated to the flattened features before the dense head.
N_TAG_INPUTS = 1
DENSE_UNITS = 1024
DROPOUT = 0.4
TAG_DROPOUT = 0.25

#: Weight names (without the ``layer/`` prefix and ``:0`` suffix) per kind of weighted layer,
#: in the order Keras 2 lists them in ``weight_names``.
KIND_WEIGHTS = {
    "conv": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "prelu": ("alpha",),
    "dense": ("kernel", "bias"),
}
KIND_TEXT = {"conv": "Conv2D", "bn": "BatchNormalization", "prelu": "PReLU", "dense": "Dense"}
#: The sequence of weighted layers in DeepDicomSort, in model order.
STRUCTURE = ("conv", "bn", "prelu") * len(CONV_FILTERS) + ("dense",) * 3


@dataclass(frozen=True)
class LayerSpec:
    """One weighted layer of DeepDicomSort: its Keras-2 default name, kind and weight shapes."""

    name: str
    kind: str
    shapes: dict[str, tuple[int, ...]]


def original_layer_specs(
    input_size: int = ORIGINAL_INPUT_SIZE, num_classes: int = len(ORIGINAL_CLASSES)
) -> list[LayerSpec]:
    """The 21 weighted layers of DeepDicomSort with the shapes they must have for ``input_size``.

    The PReLU alpha shapes follow the valid convolutions and 3x3 pools (256 -> 252 -> 248 -> 82
    -> 78 -> 74 -> 24 -> 20 -> 16 -> 5), so dense_1 sees 5*5*64 + 1 tag = 1601 inputs.
    """
    specs: list[LayerSpec] = []
    size, channels = input_size, 1
    for i, filters in enumerate(CONV_FILTERS):
        n = i + 1
        size -= KERNEL - 1
        if size <= 0:
            raise ValueError(f"DeepDicomSort does not fit {input_size}x{input_size} inputs")
        specs.append(LayerSpec(f"conv2d_{n}", "conv", {"kernel": (KERNEL, KERNEL, channels, filters), "bias": (filters,)}))
        specs.append(LayerSpec(f"batch_normalization_{n}", "bn", {w: (filters,) for w in KIND_WEIGHTS["bn"]}))
        specs.append(LayerSpec(f"p_re_lu_{n}", "prelu", {"alpha": (size, size, filters)}))
        channels = filters
        if i % 2 == 1:
            size //= POOL
    flat = size * size * channels + N_TAG_INPUTS
    for n, (fan_in, units) in enumerate(
        [(flat, DENSE_UNITS), (DENSE_UNITS, DENSE_UNITS), (DENSE_UNITS, num_classes)], start=1
    ):
        specs.append(LayerSpec(f"dense_{n}", "dense", {"kernel": (fan_in, units), "bias": (units,)}))
    return specs


@dataclass
class LegacyLayer:
    """A weighted layer as found in the file: its name there, its kind and its arrays."""

    name: str
    kind: str
    weights: dict[str, np.ndarray] = field(repr=False)


@dataclass
class DDSWeights:
    """All 21 weighted layers of a checked DeepDicomSort file, in model order."""

    path: Path
    sha256: str
    layers: list[LegacyLayer] = field(repr=False)

    def of_kind(self, kind: str) -> list[LegacyLayer]:
        return [layer for layer in self.layers if layer.kind == kind]

    @property
    def num_classes(self) -> int:
        return int(self.of_kind("dense")[-1].weights["bias"].shape[0])


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, streamed (weights files are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _names(value) -> list[str]:
    """An HDF5 name-list attribute (byte strings in Keras 2 files, empty float array when empty)."""
    if value is None:
        return []
    out = []
    for item in np.atleast_1d(np.asarray(value)).tolist():
        if isinstance(item, bytes):
            out.append(item.decode("utf8"))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise ValueError(f"not a name: {item!r}")
    return out


def _attr_names(group, name: str) -> list[str] | None:
    """A name-list attribute as Keras 2 wrote it: whole, or split into ``name0``, ``name1``, ...
    when longer than HDF5's 64 KB attribute limit. None when absent."""
    if name in group.attrs:
        return _names(group.attrs[name])
    if f"{name}0" not in group.attrs:
        return None
    out, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        out += _names(group.attrs[f"{name}{chunk}"])
        chunk += 1
    return out


def _short(weight_name: str) -> str:
    """``conv2d_1/kernel:0`` -> ``kernel``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _classify(weights: dict[str, np.ndarray]) -> str | None:
    """The kind of a weighted layer from its weight names (and kernel rank)."""
    keys = set(weights)
    if keys == {"kernel", "bias"}:
        return {4: "conv", 2: "dense"}.get(weights["kernel"].ndim)
    for kind in ("bn", "prelu"):
        if keys == set(KIND_WEIGHTS[kind]):
            return kind
    return None


def _describe(kind: str | None) -> str:
    return KIND_TEXT.get(kind, "an unrecognised layer") if kind else "an unrecognised layer"


def read_dds_hdf5(path: str | os.PathLike, input_size: int = ORIGINAL_INPUT_SIZE) -> DDSWeights:
    """Read and check a DeepDicomSort HDF5 weights file; nothing is assigned anywhere yet.

    Accepts the full-model layout (``model_weights`` group, as ``model.save`` wrote it) and the
    ``save_weights`` layout (``layer_names`` on the root). Raises :class:`UserError` with one line
    naming the file, the layer and both shapes when anything differs from DeepDicomSort at
    ``input_size`` (the dense_3 width may differ: it is replaced by the baseline's own head).
    """
    import h5py  # only arrays are read: the model config in the file is never deserialised

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file does not exist")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path}: not an HDF5 file (DeepDicomSort weights are a Keras .hdf5 file)")
    try:
        with h5py.File(path, "r") as f:
            found = _read_weighted_layers(path, f)
    except UserError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read the HDF5 file (truncated or damaged?): {reason}") from None
    _check_structure(path, found)
    _check_shapes(path, found, input_size)
    return DDSWeights(path=path, sha256=sha256_of(path), layers=found)


def _read_weighted_layers(path: Path, f) -> list[LegacyLayer]:
    if "model_weights" in f:
        group = f["model_weights"]
    elif _attr_names(f, "layer_names") is not None:
        group = f
    else:
        raise UserError(
            f"{path}: no 'model_weights' group and no 'layer_names' attribute: not a Keras HDF5 model or weights file"
        )
    layer_names = _attr_names(group, "layer_names")
    if layer_names is None:
        raise UserError(f"{path}: group '{group.name}' has no 'layer_names' attribute: not a Keras HDF5 model file")
    found: list[LegacyLayer] = []
    for name in layer_names:
        if name not in group:
            raise UserError(f"{path}: layer '{name}' is listed in layer_names but has no group in the file")
        layer_group = group[name]
        weights: dict[str, np.ndarray] = {}
        for weight_name in _attr_names(layer_group, "weight_names") or []:
            if weight_name not in layer_group:
                raise UserError(f"{path}: layer '{name}': weight '{weight_name}' is listed but missing from the file")
            array = np.asarray(layer_group[weight_name][()])
            if not np.issubdtype(array.dtype, np.floating):
                raise UserError(f"{path}: layer '{name}': weight '{weight_name}' has dtype {array.dtype}, expected float")
            if not np.all(np.isfinite(array)):
                raise UserError(f"{path}: layer '{name}': weight '{weight_name}' contains NaN or infinite values")
            weights[_short(weight_name)] = array.astype(np.float32)
        if weights:
            found.append(LegacyLayer(name=name, kind=_classify(weights), weights=weights))
    return found


def _check_structure(path: Path, found: list[LegacyLayer]) -> None:
    for i, expected in enumerate(STRUCTURE):
        if i >= len(found):
            after = f" after '{found[-1].name}'" if found else ""
            raise UserError(
                f"{path}: only {len(found)} weighted layers, DeepDicomSort has {len(STRUCTURE)}: "
                f"missing the {KIND_TEXT[expected]} layer{after} (partial file?)"
            )
        layer = found[i]
        if layer.kind != expected:
            raise UserError(
                f"{path}: layer '{layer.name}' (weighted layer {i + 1}, weights {sorted(layer.weights)}) is "
                f"{_describe(layer.kind)} where DeepDicomSort has a {KIND_TEXT[expected]} layer"
            )
    if len(found) > len(STRUCTURE):
        extra = ", ".join(layer.name for layer in found[len(STRUCTURE):])
        raise UserError(f"{path}: {len(found)} weighted layers, DeepDicomSort has {len(STRUCTURE)} (extra: {extra})")


def _check_shapes(path: Path, found: list[LegacyLayer], input_size: int) -> None:
    num_classes = int(found[-1].weights["bias"].shape[0])
    for layer, spec in zip(found, original_layer_specs(input_size, num_classes)):
        for weight, expected in spec.shapes.items():
            got = tuple(layer.weights[weight].shape)
            if got != expected:
                raise UserError(
                    f"{path}: layer '{layer.name}' ({KIND_TEXT[spec.kind]}, DeepDicomSort's {spec.name}) weight "
                    f"'{weight}' has shape {got}, expected {expected} for {input_size}x{input_size} inputs"
                )


def _check_fits(target_name: str, variable, array: np.ndarray, source: LegacyLayer, weight: str) -> None:
    """Refuse (naming both layers and shapes) when a file array does not fit a model variable."""
    if tuple(variable.shape) != tuple(array.shape):
        raise UserError(
            f"weights file layer '{source.name}': weight '{weight}' has shape {tuple(array.shape)} but model layer "
            f"'{target_name}' expects {tuple(variable.shape)}"
        )


def load_backbone(backbone: ConvBackbone, weights: DDSWeights) -> None:
    """Copy the 18 backbone layers (conv, BN, PReLU x 6) into ``backbone``.

    The backbone must be DeepDicomSort's: ``padding='valid'``, per-position PReLU alphas and
    built for the size the weights were checked for. All shapes are compared first; nothing is
    assigned unless every array fits (never a partial load).
    """
    if backbone.padding != "valid" or backbone.prelu_shared_axes is not None:
        raise ValueError("DeepDicomSort weights need ConvBackbone(padding='valid', prelu_shared_axes=None)")
    convs, norms, prelus = weights.of_kind("conv"), weights.of_kind("bn"), weights.of_kind("prelu")
    if not backbone.convs[0].built:
        size = weights.of_kind("prelu")[0].weights["alpha"].shape[0] + KERNEL - 1
        backbone(np.zeros((1, size, size, 1), np.float32))
    plan = []
    for i in range(len(CONV_FILTERS)):
        plan += [
            (backbone.convs[i], "kernel", convs[i], "kernel"),
            (backbone.convs[i], "bias", convs[i], "bias"),
            *[(backbone.norms[i], w, norms[i], w) for w in KIND_WEIGHTS["bn"]],
            (backbone.prelus[i], "alpha", prelus[i], "alpha"),
        ]
    _apply(plan)


def _apply(plan: list[tuple[layers.Layer, str, LegacyLayer, str]]) -> None:
    """Assign (layer, attribute) <- (file layer, weight) pairs, all checked before any is assigned."""
    for layer, attr, source, weight in plan:
        _check_fits(layer.path, getattr(layer, attr), source.weights[weight], source, weight)
    for layer, attr, source, weight in plan:
        getattr(layer, attr).assign(source.weights[weight])


def dds_input_layers(image_size: int, size: int = ORIGINAL_INPUT_SIZE) -> list[layers.Layer]:
    """Layers that bring dataset slices to what DeepDicomSort saw: ``size`` x ``size`` in [0, 1].

    Bilinear resampling of the whole slice (antialiased when shrinking, e.g. 512 -> 256), as
    DeepDicomSort resamples each volume in-plane to 256x256; then [-1, 1] -> [0, 1], the range its
    per-volume ``RescaleIntensity(0, 1)`` produces (the dataset's padding value -1 becomes 0).
    Built-in Keras layers only, so a saved baseline loads without importing this module.
    """
    out: list[layers.Layer] = []
    if image_size != size:
        out.append(
            layers.Resizing(size, size, interpolation="bilinear", antialias=image_size > size, name=f"resample_{size}")
        )
    out.append(layers.Rescaling(0.5, offset=0.5, name="to_unit_range"))
    return out


def build_original_model(weights: DDSWeights | None = None, num_classes: int = len(ORIGINAL_CLASSES)) -> keras.Model:
    """DeepDicomSort exactly as published: two inputs (image, DICOM tag), Keras-2 layer names.

    With ``weights`` every one of the 21 layers is loaded (and checked) from the file. Used to
    document and test the full original model; the baseline itself uses :class:`DDSClassifier`.
    """
    if weights is not None:
        num_classes = weights.num_classes
    size = ORIGINAL_INPUT_SIZE
    image = keras.Input((size, size, 1), name="input_1")
    tag = keras.Input((N_TAG_INPUTS,), name="input_2")
    tag_dropped = layers.Dropout(TAG_DROPOUT, name="dropout_1")(tag)
    x = image
    for i, filters in enumerate(CONV_FILTERS):
        n = i + 1
        x = layers.Conv2D(filters, KERNEL, padding="valid", name=f"conv2d_{n}")(x)
        x = layers.BatchNormalization(axis=-1, name=f"batch_normalization_{n}")(x)
        x = layers.PReLU(name=f"p_re_lu_{n}")(x)
        if i % 2 == 1:
            x = layers.MaxPooling2D(POOL, name=f"max_pooling2d_{n // 2}")(x)
    x = layers.Flatten(name="flatten_1")(x)
    x = layers.Concatenate(name="concatenate_1")([x, tag_dropped])
    x = layers.Dropout(DROPOUT, name="dropout_2")(x)
    x = layers.Dense(DENSE_UNITS, name="dense_1")(x)
    x = layers.Dense(DENSE_UNITS, activation="relu", name="dense_2")(x)
    x = layers.Dropout(DROPOUT, name="dropout_3")(x)
    out = layers.Dense(num_classes, activation="softmax", name="dense_3")(x)
    model = keras.Model([image, tag], out, name="deepdicomsort")
    if weights is not None:
        plan = []
        for spec, source in zip(original_layer_specs(size, num_classes), weights.layers):
            target = model.get_layer(spec.name)
            plan += [(target, w, source, w) for w in KIND_WEIGHTS[spec.kind]]
        _apply(plan)
    return model


def registry_layers(input_size: int = ORIGINAL_INPUT_SIZE) -> list[dict]:
    """The expected layers as the weights registry lists them (names as Keras 2 stored them)."""
    return [
        {"name": spec.name, "kind": KIND_TEXT[spec.kind], "weights": {f"{spec.name}/{w}:0": list(s) for w, s in spec.shapes.items()}}
        for spec in original_layer_specs(input_size)
    ]

"""Export: the SavedModel and TFLite file must give the Keras generator's results on raw slices.

Parity is measured in the generator's own units: a raw-unit difference divided by the image's
``(high - low) / 2`` (the factor the inverse scaling multiplies by), so the bounds 1e-5 and 1e-3
mean the same whatever the scanner's intensity range.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fake_run import make_random_run  # noqa: E402

from geco_tf.export.saved_model import (  # noqa: E402
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_NAME,
    export_saved_model,
    raw_to_raw,
    reference_deartifact,
    unit_range_stats,
)
from geco_tf.models.generators import UNetGenerator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SIZE = 48


def make_run(path: Path, seed: int = 0) -> Path:
    """A fake run directory: a small random U-Net saved as RUN/generator.keras (no training)."""
    return make_random_run(path, image_size=TRAIN_SIZE, seed=seed, generator="unet")


def raw_slices(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    """Raw MR-like slices: a dark background, a bright disc and a few hot pixels above the clip."""
    rng = np.random.default_rng(seed)
    b, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 2.5) ** 2
    images = rng.gamma(2.0, 30.0, size=shape) + disc * rng.normal(900.0, 120.0, size=shape)
    if h > 3 and w > 5:
        images[:, 3, 5] = 6000.0  # hot pixels: clipped by the forward scaling, restored by the inverse
    return np.clip(images, 0, None).astype(np.float32)[..., None]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def generator(run_dir):
    from geco_tf.export.load import load_generator

    return load_generator(run_dir)


@pytest.fixture(scope="module")
def saved_model(run_dir, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serving") / "geco"
    path = export_saved_model(run_dir, base, version=1)
    assert path == base / "1"
    return base


def gen_units(diff: np.ndarray, half_span: np.ndarray) -> np.ndarray:
    return np.abs(diff).reshape(len(diff), -1).max(axis=1) / half_span


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 9), (2, 200, 232), (1, 512, 512)])
def test_percentile_in_graph_matches_numpy(shape):
    """The in-graph 99.5th percentile is numpy's (linear), for dynamic and static shapes."""
    x = raw_slices(shape, seed=shape[1])
    low, high = (t.numpy().ravel() for t in unit_range_stats(tf.constant(x)))
    static = tf.function(unit_range_stats, input_signature=[tf.TensorSpec(x.shape, tf.float32)])
    low_s, high_s = (t.numpy().ravel() for t in static(tf.constant(x)))
    for i, image in enumerate(x[..., 0]):
        expected = np.percentile(image, 99.5)
        if expected <= image.min():
            expected = image.max()
        assert low[i] == low_s[i] == image.min()
        np.testing.assert_allclose([high[i], high_s[i]], expected, rtol=1e-6)


def test_identity_generator_returns_input_exactly_including_clipped_pixels():
    """With G = identity, raw -> raw is the identity: hot pixels above the clip keep their value
    (the excess is added back) and a constant image passes unchanged."""
    x = np.concatenate([raw_slices((2, 40, 36)), np.full((1, 40, 36, 1), 7.0, np.float32)])
    out = raw_to_raw(lambda z, training=False: z, tf.constant(x)).numpy()
    np.testing.assert_allclose(out, x, rtol=1e-6, atol=1e-3)
    assert out[0, 3, 5, 0] == pytest.approx(6000.0, rel=1e-6)
    np.testing.assert_array_equal(out[2], x[2])


@pytest.fixture(scope="module")
def fresh_process(saved_model, tmp_path_factory) -> dict:
    """One new Python process: tf.saved_model.load + the signature on a size never seen in
    training, then ``saved_model_cli show --all`` (its own entry point, same argv as the
    command). One process for both, because importing TensorFlow dominates the cost."""
    work = tmp_path_factory.mktemp("fresh")
    x = np.concatenate([raw_slices((2, 200, 232)), np.full((1, 200, 232, 1), 3.0, np.float32)])
    np.save(work / "x.npy", x)
    version_dir = str(saved_model / "1")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np, tensorflow as tf
        model = tf.saved_model.load({version_dir!r})
        fn = model.signatures["{SIGNATURE_NAME}"]
        out = fn({INPUT_NAME}=tf.constant(np.load({str(work / "x.npy")!r})))["{OUTPUT_NAME}"]
        np.save({str(work / "y.npy")!r}, out.numpy())
        from tensorflow.python.tools import saved_model_cli
        sys.argv = ["saved_model_cli", "show", "--all", "--dir", {version_dir!r}]
        print("=== saved_model_cli ===", flush=True)
        try:
            saved_model_cli.main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=600)
    return {"x": x, "y": np.load(work / "y.npy"), "cli": result.stdout.split("=== saved_model_cli ===", 1)[1]}


@pytest.mark.slow
def test_saved_model_in_fresh_process_matches_keras(fresh_process, generator):
    """Loaded with tf.saved_model.load in a new process, on 200x232 (training saw 48x48)."""
    x, y = fresh_process["x"], fresh_process["y"]
    assert y.shape == x.shape and y.dtype == np.float32
    ref, _, half = reference_deartifact(generator, x)
    parity = gen_units(y - ref, half)
    assert parity.max() < 1e-5, parity
    np.testing.assert_array_equal(y[2], x[2])
    assert np.abs(y[:2] - x[:2]).max() > 1.0  # the generator really changed the slices


@pytest.mark.slow
def test_saved_model_cli_lists_the_documented_signature(fresh_process):
    text = fresh_process["cli"]
    block = text[text.index("signature_def['serving_default']") :]
    block = block[: block.index("Method name is: tensorflow/serving/predict")]
    assert re.search(r"inputs\['images'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, -1, -1, 1\)", block)
    assert re.search(r"outputs\['deartifacted'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, -1, -1, 1\)", block)
    documented = (ROOT / "docs" / "serving.md").read_text()
    for line in ("inputs['images'] tensor_info:", "outputs['deartifacted'] tensor_info:", "shape: (-1, -1, -1, 1)"):
        assert line in documented and line in block


@pytest.mark.slow
def test_tflite_float32_and_dynamic_match_keras(run_dir, generator, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from geco_tf.export.tflite import export_tflite, run_tflite

    path = export_tflite(run_dir, tmp_path / "geco.tflite")  # size from config.json
    details = Interpreter(model_path=str(path)).get_input_details()[0]
    assert list(details["shape"]) == [1, TRAIN_SIZE, TRAIN_SIZE, 1] and details["dtype"] == np.float32
    x = raw_slices((2, TRAIN_SIZE, TRAIN_SIZE))
    ref, _, half = reference_deartifact(generator, x)
    parity = gen_units(run_tflite(path, x) - ref, half)
    assert parity.max() < 1e-3, parity

    quantized = export_tflite(run_dir, tmp_path / "geco-int8.tflite", size=64, quantize="dynamic")
    x64 = raw_slices((1, 64, 64))
    ref64, _, half64 = reference_deartifact(generator, x64)
    out = run_tflite(quantized, x64)
    assert out.shape == x64.shape and np.isfinite(out).all()
    assert gen_units(out - ref64, half64).max() < 0.2  # int8 weights: close, not exact

    half_size = export_tflite(run_dir, tmp_path / "geco-f16.tflite", quantize="float16")
    assert half_size.stat().st_size < path.stat().st_size  # (half the size for the default U-Net)
    assert gen_units(run_tflite(half_size, x) - ref, half).max() < 1e-2


def _small_generators() -> dict:
    import inspect

    from geco_tf.models.generators import MultiResidualGenerator, ResidualGenerator

    kinds = {
        "residual": lambda: ResidualGenerator(depth=2, base_filters=4),
        "multi-residual": lambda: MultiResidualGenerator(filters=4, blocks=1),
    }
    if "input_skip" in inspect.signature(UNetGenerator.__init__).parameters:
        kinds["unet-input-skip"] = lambda: UNetGenerator(depth=2, base_filters=4, input_skip=True)
        kinds["unet-output-band"] = lambda: UNetGenerator(
            depth=2, base_filters=4, input_skip=True, output_band=(0.8, 0.85)
        )
    return kinds


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(_small_generators()))
def test_every_generator_kind_exports(kind, tmp_path):
    """Each generator the trainer can produce goes through the serving graph and LiteRT (e.g.
    the input-skip U-Net's atanh, which has no LiteRT builtin, is traced through LOG/DIV)."""
    from geco_tf.export.saved_model import ServingModule
    from geco_tf.export.tflite import export_tflite, run_tflite

    generator = _small_generators()[kind]()
    generator(np.zeros((1, 32, 32, 1), np.float32))
    x = raw_slices((2, 36, 44))
    ref, _, half = reference_deartifact(generator, x)
    module = ServingModule(generator)  # keep a reference: tf.function methods hold `self` weakly
    served = module.serve(tf.constant(x))[OUTPUT_NAME].numpy()
    assert gen_units(served - ref, half).max() < 1e-5
    x32 = raw_slices((1, 32, 32))
    ref32, _, half32 = reference_deartifact(generator, x32)
    out = run_tflite(export_tflite(generator, tmp_path / f"{kind}.tflite", size=32), x32)
    assert gen_units(out - ref32, half32).max() < 1e-3


@pytest.mark.slow
def test_export_cli(run_dir, tmp_path):
    from click.testing import CliRunner
    from geco_tf_cli.main import cli

    runner = CliRunner()
    args = ["export", "--run", str(run_dir), "--saved-model", str(tmp_path / "sm"), "--version", "3"]
    result = runner.invoke(cli, [*args, "--tflite", str(tmp_path / "g.tflite"), "--tflite-size", "32"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sm" / "3" / "saved_model.pb").is_file() and (tmp_path / "g.tflite").stat().st_size > 0
    assert not [p for p in (tmp_path / "sm").iterdir() if p.name.startswith(".")]  # no temporary left

    missing = runner.invoke(cli, ["export", "--run", str(tmp_path / "nope"), "--tflite", str(tmp_path / "x.tflite")])
    assert missing.exit_code == 2 and "nope" in missing.output and "Traceback" not in missing.output
    neither = runner.invoke(cli, ["export", "--run", str(run_dir)])
    assert neither.exit_code == 2 and "--saved-model" in neither.output


def _doc_block(heading: str) -> str:
    """The first ```python block after ``heading`` in docs/serving.md."""
    text = (ROOT / "docs" / "serving.md").read_text()
    after = text[text.index(heading) :]
    return after[after.index("```python\n") + len("```python\n") :].split("```", 1)[0]


@pytest.mark.slow
def test_documented_rest_client_encodes_requests_tf_serving_can_answer(saved_model):
    """The snippet's request, decoded as TF Serving does, runs through the SavedModel; the
    answer, encoded as TF Serving encodes a single output, parses back bit for bit."""
    namespace: dict = {}
    exec(compile(_doc_block("### Python client (REST)"), "serving.md", "exec"), namespace)
    x = raw_slices((2, 20, 24))
    body = namespace["build_predict_request"](x[..., 0])
    request = json.loads(body)
    assert request["signature_name"] == "serving_default"
    images = np.asarray(request["inputs"]["images"], dtype=np.float32)
    np.testing.assert_array_equal(images, x)  # float32 -> JSON -> float32 is exact

    fn = tf.saved_model.load(str(saved_model / "1")).signatures["serving_default"]
    y = fn(images=tf.constant(images))["deartifacted"].numpy()
    for response in ({"outputs": y.tolist()}, {"outputs": {"deartifacted": y.tolist()}}, {"predictions": y.tolist()}):
        np.testing.assert_array_equal(namespace["parse_predict_response"](json.dumps(response)), y)
    with pytest.raises(RuntimeError, match="bad input"):
        namespace["parse_predict_response"](json.dumps({"error": "bad input"}))


def test_documented_grpc_request_carries_the_tensor():
    pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    namespace: dict = {}
    exec(compile(_doc_block("### gRPC"), "serving.md", "exec"), namespace)
    x = raw_slices((2, 12, 10))
    request = namespace["build_grpc_request"](x)
    decoded = type(request).FromString(request.SerializeToString())
    assert decoded.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(decoded.inputs["images"]), x)


@pytest.mark.slow
def test_float16_policy_generator_is_exported_in_float32(tmp_path):
    """A generator saved under mixed precision is rebuilt in float32 for export."""
    import keras

    from geco_tf.export.load import load_generator

    keras.config.set_dtype_policy("mixed_float16")
    try:
        g16 = UNetGenerator(depth=2, base_filters=4, input_skip=False)
        g16(np.zeros((1, 16, 16, 1), np.float32))
        g16.save(tmp_path / "g16.keras")
    finally:
        keras.config.set_dtype_policy("float32")
    g32 = load_generator(tmp_path / "g16.keras")
    assert g32.dtype_policy.name == "float32"
    assert all(layer.compute_dtype == "float32" for layer in g32._flatten_layers())
    x = raw_slices((1, 16, 16))[..., 0][..., None] / 1000.0
    out = g32(x)
    assert out.dtype == tf.float32


@pytest.mark.slow  # (also slow: `-m "not slow"` replaces addopts' `-m "not benchmark"`)
@pytest.mark.benchmark
def test_benchmark_parity_default_generator(tmp_path):
    """docs/results.md: parity of the SavedModel (fresh process) and TFLite files for the default
    UNetGenerator() (depth 3, base 16, random weights: parity does not depend on training).
    Run: python -m pytest -m benchmark tests/export/test_export.py -s"""
    import time

    from geco_tf.export.tflite import export_tflite, run_tflite

    run = tmp_path / "run"
    run.mkdir()
    import keras

    keras.utils.set_random_seed(0)
    generator = UNetGenerator(input_skip=False)
    generator(np.zeros((1, 64, 64, 1), np.float32))
    generator.save(run / "generator.keras")
    (run / "config.json").write_text(json.dumps({"image_size": 64}))
    export_saved_model(run, tmp_path / "sm")
    from geco_tf.export.load import load_generator

    keras_generator = load_generator(run)
    report = {}
    for shape in [(4, 200, 232), (2, 512, 512)]:
        x = raw_slices(shape, seed=shape[1])
        np.save(tmp_path / "x.npy", x)
        script = (
            "import numpy as np, tensorflow as tf;"
            f"f = tf.saved_model.load({str(tmp_path / 'sm' / '1')!r}).signatures['serving_default'];"
            f"np.save({str(tmp_path / 'y.npy')!r}, f(images=tf.constant(np.load({str(tmp_path / 'x.npy')!r})))['deartifacted'].numpy())"
        )
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=600)
        ref, _, half = reference_deartifact(keras_generator, x)
        y = np.load(tmp_path / "y.npy")
        report[f"saved_model {shape[1]}x{shape[2]} (generator units)"] = float(gen_units(y - ref, half).max())
        report[f"saved_model {shape[1]}x{shape[2]} (raw units, range ~0-2000)"] = float(np.abs(y - ref).max())
    for size, quantize in [
        (64, None),
        (64, "float16"),
        (64, "dynamic"),
        (512, None),
        (512, "float16"),
        (512, "dynamic"),
    ]:
        path = export_tflite(run, tmp_path / f"g{size}{quantize}.tflite", size=size, quantize=quantize)
        x = raw_slices((2, size, size), seed=size)
        ref, _, half = reference_deartifact(keras_generator, x)
        start = time.perf_counter()
        y = run_tflite(path, x)
        seconds = (time.perf_counter() - start) / len(x)
        key = f"tflite {size}x{size} {quantize or 'float32'}"
        report[key + " (generator units)"] = float(gen_units(y - ref, half).max())
        report[key + " bytes"] = path.stat().st_size
        report[key + " s/slice"] = round(seconds, 3)
    print(json.dumps(report, indent=1))
    assert report["saved_model 200x232 (generator units)"] < 1e-5
    assert report["tflite 64x64 float32 (generator units)"] < 1e-3

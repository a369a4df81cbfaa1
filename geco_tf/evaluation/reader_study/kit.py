"""Build the blinded reader-study kit from a run's generator and a dataset's test split.

Why it is built this way:

* **Test split only, one slice per subject where possible, stratified over the target's
  classes**: readers must see anatomy the generator never trained on, as many different
  subjects as the study has items, and every scanner class about equally often (a kit of one
  vendor's images says nothing about the others).
* **Distinct slices for every item**: a slice shown in a pair is not shown again in part B, so a
  reader cannot match a rated image to its pair.
* **Blind by construction**: the page holds item ids in presentation order (``p01``.., ``r01``..),
  neutral alt text and the images, nothing else. Originals and edits go through the same path:
  the same clip and quantisation to uint8, the same size, and PNG at compression level 0, so
  every image of a kit has the *same byte length* and file size cannot hint at which is which.
  Left/right in part A and edited/original in part B are balanced (half each, at random).
* **The key lives outside the kit** (default ``KIT-key.json`` beside it; a key path inside
  KIT is refused) so the folder handed out cannot un-blind itself.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from geco_tf.errors import UserError
from geco_tf.evaluation.reader_study.page import render_page
from geco_tf.io import atomic_path, write_json_atomic
from geco_tf.progress import QUIET, Progress

#: Slices whose foreground (pixels brighter than the -1 background by this much) covers less than
#: MIN_FOREGROUND of the image are left out when enough others remain: nothing to judge in them.
FOREGROUND_LEVEL = -0.9
MIN_FOREGROUND = 0.10


def default_key_path(kit_dir: str | os.PathLike) -> Path:
    """``KIT-key.json`` beside the kit directory (never inside it)."""
    kit_dir = Path(kit_dir)
    return kit_dir.parent / f"{kit_dir.name}-key.json"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float images to uint8 grey levels: the one quantisation originals and edits share."""
    x = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def png_data_uri(image: np.ndarray) -> str:
    """A 2-D uint8 image as a ``data:image/png`` URI, uncompressed (compression level 0): the byte
    length depends only on the image size, never on its content."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 image, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", compress_level=0, optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def select_slices(rows: list[dict], target: str, n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` manifest rows: classes of ``target`` in turn, within a class each subject once before
    any subject twice, subjects and slices in random order. Raises :class:`UserError` when the
    rows hold fewer than ``n`` slices."""
    if len(rows) < n:
        raise UserError(
            f"the test split has {len(rows)} slices with a {target} label; the kit needs {n} "
            "(one per item: lower --pairs or --ratings)"
        )
    by_class: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_class[row[target]][row["subject"]].append(row)
    queues: list[list[dict]] = []
    for cls in sorted(by_class):
        subjects = sorted(by_class[cls])
        rng.shuffle(subjects)
        per_subject = []
        for subject in subjects:
            slices = sorted(by_class[cls][subject], key=lambda r: int(r["slice_id"]))
            per_subject.append([slices[i] for i in rng.permutation(len(slices))])
        depth = max(len(s) for s in per_subject)
        queues.append([s[k] for k in range(depth) for s in per_subject if k < len(s)])
    order = [queues[i] for i in rng.permutation(len(queues))]
    chosen: list[dict] = []
    position = 0
    while len(chosen) < n:
        for queue in order:
            if position < len(queue) and len(chosen) < n:
                chosen.append(queue[position])
        position += 1
    return chosen


def _balanced_flags(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` booleans, half True (one more either way when n is odd, at random), in random order."""
    flags = np.zeros(n, dtype=bool)
    flags[: n // 2 + (int(rng.integers(2)) if n % 2 else 0)] = True
    return flags[rng.permutation(n)]


def _read_run(run_dir: Path) -> dict:
    config_path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory does not exist")
    if not config_path.is_file():
        raise UserError(f"{config_path}: not found (is {run_dir} a `geco-tf train` run?)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not config.get("target"):
        raise UserError(f"{config_path}: names no target (is {run_dir} a `geco-tf train` run?)")
    return config


def _load_generator(path: Path):
    import keras

    import geco_tf.models  # noqa: F401 -- registers the custom classes for deserialisation

    if not path.is_file():
        raise UserError(f"{path}: generator not found (is {path.parent} a `geco-tf train` run?)")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # a corrupt or foreign file is the user's to fix
        raise UserError(f"{path}: cannot load the generator ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def _test_images(data, target: str) -> tuple[dict[int, np.ndarray], dict[int, dict]]:
    """Every test slice with a known ``target`` label: images and manifest rows by slice id."""
    from geco_tf.data.pipeline import slice_records

    manifest = {int(r["slice_id"]): r for r in data.rows("test")}
    images: dict[int, np.ndarray] = {}
    for record in slice_records(data, "test").batch(256):
        labels = record[target].numpy()
        for sid, image, label in zip(record["slice_id"].numpy(), record["image"].numpy(), labels):
            if label >= 0 and int(sid) in manifest:
                images[int(sid)] = image[..., 0]
    return images, {sid: manifest[sid] for sid in images}


def build_kit(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    pairs: int = 10,
    ratings: int = 20,
    seed: int = 0,
    key_path: str | os.PathLike | None = None,
    title: str = "Reader study",
    progress: Progress = QUIET,
) -> dict:
    """Write the blinded kit ``out_dir/index.html`` and its key (JSON, outside ``out_dir``).

    Args:
        run_dir: a ``geco-tf train`` run (``generator.keras``, ``config.json`` naming the target
            and the dataset).
        out_dir: the kit directory (replaced as a whole if it holds a previous kit).
        data_dir: the dataset (default: the one in ``RUN/config.json``); its test split is used.
        pairs: part A items (an image and its edit, left/right at random).
        ratings: part B items (single images, half of them edited).
        seed: same seed, same run and data: the same kit and key.
        key_path: where the key goes (default :func:`default_key_path`); refused inside the kit.
        title: the page's heading.
        progress: step lines on stderr.

    Returns a summary: paths, item counts, subjects and slices per class.
    """
    from geco_tf.data.dataset import check_target, open_dataset

    if pairs < 0 or ratings < 0 or pairs + ratings == 0:
        raise UserError(f"--pairs {pairs} --ratings {ratings}: need at least one item and no negative count")
    if pairs > 99 or ratings > 99:
        raise UserError(f"--pairs {pairs} --ratings {ratings}: at most 99 of each (item ids p01-p99, r01-r99)")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    key_path = Path(key_path) if key_path is not None else default_key_path(out_dir)
    if _inside(key_path, out_dir):
        raise UserError(f"--key {key_path}: the key must not be inside the kit {out_dir} (the kit is handed to readers)")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "index.html").is_file():
        raise UserError(f"{out_dir}: directory is not empty and holds no kit; choose another --out")
    if key_path.is_dir():
        raise UserError(f"--key {key_path}: is a directory")

    progress.step("reading the run and the test split")
    config = _read_run(run_dir)
    target = config["target"]
    if data_dir is None:
        data_dir = config.get("data")
        if not data_dir:
            raise UserError(f"{run_dir / 'config.json'}: names no dataset; pass --data DATA")
    data = open_dataset(data_dir)
    check_target(data, target, splits=("test",))
    generator = _load_generator(run_dir / "generator.keras")
    images, rows = _test_images(data, target)
    eligible = [r for sid, r in rows.items() if np.mean(images[sid] > FOREGROUND_LEVEL) >= MIN_FOREGROUND]
    if len(eligible) < pairs + ratings:
        eligible = list(rows.values())

    progress.step("choosing slices (one per subject where possible, classes in turn)")
    rng = np.random.default_rng(seed)
    chosen = select_slices(eligible, target, pairs + ratings, rng)
    pair_rows, rating_rows = chosen[:pairs], chosen[pairs:]
    edited_flags = _balanced_flags(len(rating_rows), rng)
    original_left = _balanced_flags(len(pair_rows), rng)

    progress.step(f"editing {pairs + int(edited_flags.sum())} slices with the generator")
    to_edit = [int(r["slice_id"]) for r in pair_rows] + [
        int(r["slice_id"]) for r, e in zip(rating_rows, edited_flags) if e
    ]
    edited: dict[int, np.ndarray] = {}
    for start in progress.track(range(0, len(to_edit), 32), total=-(-len(to_edit) // 32), desc="generating"):
        ids = to_edit[start : start + 32]
        batch = np.stack([images[i] for i in ids])[..., None]
        out = np.asarray(generator(batch, training=False))[..., 0]
        if out.shape != batch.shape[:3]:
            raise UserError(f"{run_dir / 'generator.keras'}: output shape {out.shape[1:]} differs from the input's {batch.shape[1:3]}")
        edited.update(zip(ids, out))

    progress.step("encoding images and writing the kit and its key")
    pair_order = rng.permutation(len(pair_rows))
    rating_order = rng.permutation(len(rating_rows))
    page_pairs, key_pairs = [], []
    for k, i in enumerate(pair_order, start=1):
        sid = int(pair_rows[i]["slice_id"])
        a, b = png_data_uri(to_uint8(images[sid])), png_data_uri(to_uint8(edited[sid]))
        left, right = (a, b) if original_left[i] else (b, a)
        item = f"p{k:02d}"
        page_pairs.append({"item": item, "left": left, "right": right})
        key_pairs.append({"item": item, "original": "left" if original_left[i] else "right",
                          "slice_id": sid, "class": pair_rows[i][target]})
    page_ratings, key_ratings = [], []
    for k, i in enumerate(rating_order, start=1):
        sid = int(rating_rows[i]["slice_id"])
        is_edited = bool(edited_flags[i])
        image = edited[sid] if is_edited else images[sid]
        item = f"r{k:02d}"
        page_ratings.append({"item": item, "image": png_data_uri(to_uint8(image))})
        key_ratings.append({"item": item, "edited": is_edited, "slice_id": sid, "class": rating_rows[i][target]})
    digest = hashlib.sha256(json.dumps([page_pairs, page_ratings]).encode()).hexdigest()[:16]
    page = render_page({"kit": digest, "pairs": page_pairs, "ratings": page_ratings}, title=title)
    key = {
        "kit": digest,
        "run": str(run_dir.resolve()),
        "data": str(Path(data.path).resolve()),
        "target": target,
        "seed": int(seed),
        "pairs": key_pairs,
        "ratings": key_ratings,
    }
    write_json_atomic(key_path, key)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "index.html").write_text(page, encoding="utf-8")
    per_class: dict[str, int] = defaultdict(int)
    for r in chosen:
        per_class[r[target]] += 1
    summary = {
        "kit": str(out_dir / "index.html"),
        "key": str(key_path),
        "kit_id": digest,
        "pairs": len(page_pairs),
        "ratings": len(page_ratings),
        "edited_ratings": int(edited_flags.sum()),
        "subjects": len({r["subject"] for r in chosen}),
        "slices_per_class": dict(sorted(per_class.items())),
        "bytes": len(page.encode("utf-8")),
    }
    progress.note(f"kit: {summary['kit']} ({summary['bytes'] / 1e3:,.0f} kB); key: {key_path}")
    return summary

"""``evaluate_run``: the evidence that the scanner is gone and the anatomy kept.

The paper judges GECO by the classifier trained *alongside* the generator. That classifier is a
sparring partner the generator has learnt to fool; a user downstream meets fresh models. So this
report adds, on the test split:

* the **audit**: classifiers trained from scratch on generated training images and tested on
  generated test images, with two different architectures -- the DDS-style CNN
  (:func:`geco_tf.evaluation.audit.audit_accuracy`) and a linear probe on Fourier magnitudes
  (:mod:`geco_tf.evaluation.probes`) -- each with its *power* (the same model trained and tested on
  original images; an audit proves something only where that is >= 0.90);
* a **verdict line** that says plainly whether the signature survives;
* fidelity (SSIM, PSNR: means, 95% CIs, distributions, the paper's Table 2 per modality);
* ``utility_retained`` (:mod:`geco_tf.evaluation.utility`);
* GECO beside simple harmonisation baselines on a leakage-versus-SSIM plot
  (:mod:`geco_tf.evaluation.harmonisation`);
* the paper's figures (:mod:`geco_tf.evaluation.figures`).

Everything lands in ``REPORT/``: ``metrics.json`` (the keys docs/evaluation.md lists, plus details),
the PNG figures, and ``index.html`` with the figures embedded, so the one file can be mailed.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

import geco_tf.models  # noqa: F401 -- registers the custom classes for deserialisation
from geco_tf.data.dataset import DatasetInfo, check_target, open_dataset
from geco_tf.data.pipeline import load_split_arrays
from geco_tf.errors import UserError
from geco_tf.evaluation import audit, figures
from geco_tf.evaluation.checkpoints import restore_epoch
from geco_tf.evaluation.harmonisation import BASELINE_KINDS, DEFAULT_SIGMAS, default_baselines, nyul_available
from geco_tf.evaluation.probes import PROBE_MAX_EPOCHS, fit_predict_cnn, fit_predict_fourier
from geco_tf.evaluation.stats import accuracy_ci, confusion_matrix, mean_ci
from geco_tf.evaluation.utility import UTILITY_LABELS, choose_utility_label, pooled_labels, utility_retained
from geco_tf.io import write_json_atomic, write_text_atomic
from geco_tf.metrics import fidelity
from geco_tf.progress import QUIET, Progress
from geco_tf.training.baseline import load_baseline
from geco_tf.training.generate import generate
from geco_tf.training.run import RunDir

#: An audit counts only where the same model reaches this on original images (docs/evaluation.md).
AUDIT_POWER = 0.90
#: The signature counts as removed when every valid audit is at most chance + this margin
#: (0.40 for four manufacturers).
AUDIT_MARGIN = 0.15
SSIM_TARGET = 0.97
#: Probes (leakage, utility, Fourier audit) train on at most this many training slices.
MAX_PROBE_TRAIN = 4000
EXTRA_LABELS = ("manufacturer", "field_strength", "modality", "lesion")
#: The numbered steps :func:`evaluate_run` announces on its ``progress`` (for the ``[k/n]`` prefix).
EVALUATE_STEPS = 9


# ----------------------------------------------------------------------------------------------
# loading


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _load_model(path: Path, what: str) -> keras.Model:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # a corrupt or foreign file is the user's to fix
        raise UserError(f"{path}: cannot load {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def _resolve_data(run: RunDir, config: dict, data_dir: str | os.PathLike | None) -> DatasetInfo:
    """``data_dir``, else the dataset ``geco-tf train`` recorded in ``RUN/config.json`` (``data``;
    a relative path is tried as given, then relative to the run)."""
    if data_dir is None:
        data_dir = config.get("data")
    if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
        raise UserError(f"{run.config}: names no dataset; pass --data DATA")
    path = Path(data_dir)
    if not path.is_absolute() and not path.exists() and (run.path / path).exists():
        path = run.path / path
    return open_dataset(path)


def _predict(classifier, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    out = [np.asarray(classifier(images[i : i + batch_size], training=False)) for i in range(0, len(images), batch_size)]
    return np.argmax(np.concatenate(out), axis=-1)


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


# ----------------------------------------------------------------------------------------------
# the audit


def _dds_audit(generator, data, target: str, epochs: int | None, seed: int, progress: Progress) -> dict:
    """The DDS-style audit (:func:`geco_tf.evaluation.audit.audit_accuracy`) on generated
    images and, for its power, on originals, in the report's shape."""
    kwargs = {"classifier": "dds", "seed": seed, "progress": progress}
    if epochs is not None:
        kwargs["epochs"] = kwargs["patience"] = epochs
    progress.step("audit: a fresh DDS-style classifier trained on generated images")
    on_generated = audit.audit_accuracy(generator, data, target, **kwargs)
    progress.step("audit power: the same classifier trained on original images")
    on_original = audit.audit_accuracy(None, data, target, **kwargs)
    return {
        "model": "DDS-style CNN, trained from scratch",
        "accuracy": float(on_generated["accuracy"]),
        "ci95": on_generated["ci95"],
        "accuracy_original": float(on_original["accuracy"]),
        "ci95_original": on_original["ci95"],
        "confusion": on_generated["confusion"],
        "confusion_original": on_original["confusion"],
        "best_epoch": on_generated["best_epoch"],
        "best_epoch_original": on_original["best_epoch"],
        "epochs": on_generated["epochs"],
    }


def _fourier_audit(x_train, g_train, y_train, x_test, g_test, y_test, n_classes: int, seed: int) -> dict:
    pred_gen = fit_predict_fourier(g_train, y_train, g_test, seed=seed)
    pred_orig = fit_predict_fourier(x_train, y_train, x_test, seed=seed)
    gen, orig = accuracy_ci(y_test, pred_gen), accuracy_ci(y_test, pred_orig)
    return {
        "model": "linear probe on Fourier magnitudes",
        "accuracy": gen["accuracy"],
        "ci95": gen["ci95"],
        "accuracy_original": orig["accuracy"],
        "ci95_original": orig["ci95"],
        "confusion": confusion_matrix(y_test, pred_gen, n_classes),
    }


def verdict(audits: Sequence[dict], chance: float, ssim: float, target: str) -> dict:
    """One plain sentence on whether the scanner signature survives, and a status word.

    ``SURVIVES`` when any audit still beats chance + :data:`AUDIT_MARGIN` on generated images
    (power is not needed to show that something is found); ``INCONCLUSIVE`` when none does and
    no audit has the power (>= :data:`AUDIT_POWER` on originals) to show removal;
    ``REMOVED`` otherwise (with a fidelity caveat below the SSIM target).
    """
    bar = chance + AUDIT_MARGIN
    valid = [a for a in audits if a["accuracy_original"] >= AUDIT_POWER]
    # Power is needed to claim removal, not survival: a fresh model that finds the scanner on
    # G(X) well above chance is positive evidence however it does on originals.
    surviving = [a for a in audits if a["accuracy"] > bar]
    weak = [a for a in audits if a["accuracy_original"] < AUDIT_POWER and a not in surviving]
    if surviving:
        worst = max(surviving, key=lambda a: a["accuracy"])
        low, high = worst["ci95"]
        status = "SURVIVES"
        text = (
            f"The {target} signature SURVIVES: a fresh {worst['model']} still identifies the {target} of "
            f"generated images with accuracy {worst['accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}), "
            f"above the bar of {bar:.2f} (chance {chance:.2f}). The co-trained classifier's number does not show removal."
        )
    elif not valid:
        status = "INCONCLUSIVE"
        text = (
            f"INCONCLUSIVE: no audit found the {target} in generated images, but none reached {AUDIT_POWER:.2f} "
            f"on original images either, so that proves nothing about removal."
        )
    else:
        status = "REMOVED"
        best = max(valid, key=lambda a: a["accuracy"])
        text = (
            f"The {target} signature is REMOVED as far as the audits can tell: every audit with power "
            f">= {AUDIT_POWER:.2f} on originals is at most {best['accuracy']:.3f} on generated images "
            f"(bar {bar:.2f}, chance {chance:.2f})."
        )
        if not ssim >= SSIM_TARGET:
            status = "REMOVED-LOW-FIDELITY"
            text += f" But mean SSIM {ssim:.3f} is below the {SSIM_TARGET} target: the anatomy is not kept well enough."
    if weak:
        text += " Audits without power (cannot show removal): " + ", ".join(
            f"{a['model']} ({a['accuracy_original']:.2f} on originals)" for a in weak
        ) + "."
    return {"status": status, "text": text, "bar": bar}


# ----------------------------------------------------------------------------------------------
# the entry point


def evaluate_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    baseline_dir: str | os.PathLike | None = None,
    *,
    audit_epochs: int | None = None,
    probe_epochs: int = PROBE_MAX_EPOCHS,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    baselines: Sequence[str] = BASELINE_KINDS,
    n_panels: int = 4,
    seed: int = 0,
    epoch: int | None = None,
    progress: Progress = QUIET,
) -> dict:
    """Evaluate a GECO run on the test split and write ``out_dir/{metrics.json,*.png,index.html}``.

    Args:
        run_dir: a directory written by ``geco-tf train`` (generator.keras, classifier.keras,
            config.json, history.csv, metrics.json).
        out_dir: the report directory (created).
        data_dir: the dataset; defaults to the one named in ``RUN/config.json``.
        baseline_dir: a ``geco-tf baseline`` run; its classifier on original test images gives
            ``accuracy_original``. Without it, the DDS audit model's accuracy on originals stands
            in, and ``accuracy_original_source`` says so.
        audit_epochs: epochs of the DDS audit (None: the audit's default).
        probe_epochs: at most this many epochs of the small CNN probes (leakage, utility); they
            stop early on held-out training slices.
        sigmas: Gaussian blur baselines.
        baselines: which harmonisation baselines to run (names in ``BASELINE_KINDS``).
        n_panels: slices shown as original / generated / difference.
        seed: seeds every probe and audit.
        epoch: evaluate this epoch's generator and co-trained classifier, restored from
            ``RUN/checkpoints`` (:mod:`geco_tf.evaluation.checkpoints`), instead of the epoch
            the run kept: what another selection rule would have given.
        progress: announces each of the :data:`EVALUATE_STEPS` steps and draws a bar (with an
            estimate) inside the long ones: the generator passes and every classifier trained.

    Returns the metrics dict also written to ``metrics.json``.
    """
    # Each probe is a fresh Keras model, so tf.function retraces by design; the warning is noise.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory does not exist")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is a file, not a directory")
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"{run.config}: missing (is {run_dir} a run directory written by `geco-tf train`?)")
    config = run.read_config()
    run_metrics = _read_json(run.metrics)
    target = config.get("target") or run_metrics.get("target")
    if not target:
        raise UserError(f"{run.config}: names no target (is this a `geco-tf train` run?)")

    progress.step("loading the run and the data")
    data = _resolve_data(run, config, data_dir)
    classes = check_target(data, target, splits=("train", "test"))
    n_classes, chance = len(classes), 1.0 / len(classes)
    generator = _load_model(run.generator, "generator")
    classifier = _load_model(run.classifier, "co-trained classifier")
    if epoch is not None:
        restore_epoch(run_dir, epoch, generator, classifier)
        progress.note(f"epoch {epoch}'s generator and co-trained classifier, from {run.checkpoints}")
    x_train, y_train, lab_train = load_split_arrays(data, "train", target, with_labels=EXTRA_LABELS)
    x_test, y_test, lab_test = load_split_arrays(data, "test", target, with_labels=EXTRA_LABELS)
    if len(x_test) == 0 or len(x_train) == 0:
        raise UserError(f"{data.path}: the train or test split has no slice with a {target} label")
    pick = _subsample(len(x_train), MAX_PROBE_TRAIN, seed)
    x_train, y_train = x_train[pick], y_train[pick]
    lab_train = {k: v[pick] for k, v in lab_train.items()}

    progress.step(f"generating: G on {len(x_train)} training and {len(x_test)} test slices")
    g_train = generate(generator, x_train, progress=progress, desc="G(train)")
    g_test = generate(generator, x_test, progress=progress, desc="G(test)")

    progress.step("co-trained classifier and fidelity (SSIM, PSNR) on the test split")
    pred_co = _predict(classifier, g_test)
    cotrained = accuracy_ci(y_test, pred_co)
    confusion_co = confusion_matrix(y_test, pred_co, n_classes)
    fid = fidelity(x_test, g_test)
    ssim_stats, psnr_stats = mean_ci(fid["ssim"]), mean_ci(fid["psnr"])

    audit_dds = _dds_audit(generator, data, target, audit_epochs, seed, progress)
    progress.step("audit: the Fourier linear probe" + (", and the baseline classifier" if baseline_dir else ""))
    audit_fourier = _fourier_audit(x_train, g_train, y_train, x_test, g_test, y_test, n_classes, seed)
    if baseline_dir is not None:
        baseline = load_baseline(baseline_dir)
        original = accuracy_ci(y_test, _predict(baseline, x_test))
        original_source = f"baseline classifier {Path(baseline_dir) / 'baseline.keras'} on original test images"
    else:
        acc = audit_dds["accuracy_original"]
        original = {"accuracy": acc, "ci95": audit_dds["ci95_original"], "n": len(x_test)}
        original_source = "no --baseline given: the DDS audit model trained and tested on original images"

    progress.step("utility: a label that is not the scanner, learnt on original and on generated images")
    pooled_train, pooled_test, pooled_classes = {}, {}, {}
    for name in UTILITY_LABELS:
        pooled_train[name], pooled_classes[name] = pooled_labels(name, lab_train[name], data.classes(name))
        pooled_test[name], _ = pooled_labels(name, lab_test[name], data.classes(name))
    label = choose_utility_label(pooled_train, pooled_test)
    if label is not None:
        utility = utility_retained(
            x_train, g_train, pooled_train[label], x_test, g_test, pooled_test[label], len(pooled_classes[label]),
            epochs=probe_epochs, seed=seed, progress=progress,
        )
        utility["label"] = label
        utility["classes"] = pooled_classes[label]
    else:
        utility = {"utility_retained": math.nan, "label": None, "why": "no non-scanner label with 2+ classes in train and test"}

    progress.step(f"leakage of harmonisation baselines beside GECO ({', '.join(baselines)}, GECO)")

    def leak(name: str, label: str, kind: str, h_train: np.ndarray, h_test: np.ndarray, ssim: float) -> dict:
        """Both fresh probes on harmonised images; the plotted leakage is the stronger one."""
        cnn = accuracy_ci(y_test, fit_predict_cnn(h_train, y_train, h_test, n_classes, epochs=probe_epochs, seed=seed,
                                                  progress=progress, desc=f"small CNN probe on {name}"))
        fourier = accuracy_ci(y_test, fit_predict_fourier(h_train, y_train, h_test, seed=seed))
        best = max((cnn, fourier), key=lambda a: a["accuracy"])
        return {"name": name, "label": label, "kind": kind, "ssim": ssim, "leakage": best["accuracy"], "ci95": best["ci95"],
                "leakage_cnn": cnn["accuracy"], "leakage_fourier": fourier["accuracy"]}

    leakage = []
    for h in default_baselines(sigmas, seed=seed, kinds=baselines):
        h.fit(x_train)
        h_train, h_test = h(x_train), h(x_test)
        leakage.append(leak(h.name, h.label, "baseline", h_train, h_test, float(np.mean(fidelity(x_test, h_test)["ssim"]))))
    leakage.append(leak("GECO", "GECO generator", "geco", g_train, g_test, ssim_stats["mean"]))

    progress.step("per modality, figures and the HTML report")
    per_modality = _per_modality(data, lab_test, y_test, pred_co, fid["ssim"])

    result_verdict = verdict([audit_dds, audit_fourier], chance, ssim_stats["mean"], target)
    metrics = {
        "target": target,
        "classes": classes,
        "n_test": int(len(x_test)),
        "accuracy_original": original["accuracy"],
        "accuracy_cotrained": cotrained["accuracy"],
        "accuracy_audit": audit_dds["accuracy"],
        "accuracy_audit_original": audit_dds["accuracy_original"],
        "utility_retained": utility["utility_retained"],
        "chance": chance,
        "ssim": ssim_stats["mean"],
        "psnr": psnr_stats["mean"],
        "per_modality": per_modality,
        "confusion_cotrained": confusion_co,
        # details beyond the documented keys
        "verdict": result_verdict,
        "ci95": {
            "accuracy_original": original["ci95"],
            "accuracy_cotrained": cotrained["ci95"],
            "accuracy_audit": audit_dds["ci95"],
            "accuracy_audit_original": audit_dds["ci95_original"],
            "accuracy_audit_fourier": audit_fourier["ci95"],
            "accuracy_audit_fourier_original": audit_fourier["ci95_original"],
            "ssim": ssim_stats["ci95"],
            "psnr": psnr_stats["ci95"],
        },
        "accuracy_original_source": original_source,
        "accuracy_audit_fourier": audit_fourier["accuracy"],
        "accuracy_audit_fourier_original": audit_fourier["accuracy_original"],
        "confusion_audit": audit_dds["confusion"],
        "confusion_audit_fourier": audit_fourier["confusion"],
        "audits": {"dds": audit_dds, "fourier": audit_fourier},
        "ssim_std": ssim_stats["std"],
        "psnr_std": psnr_stats["std"],
        "ssim_quantiles": _quantiles(fid["ssim"]),
        "psnr_quantiles": _quantiles(fid["psnr"]),
        "utility": utility,
        "leakage": leakage,
        "leakage_probe": (
            f"the stronger of two fresh probes trained on harmonised train slices and tested on harmonised test "
            f"slices: a small CNN (at most {probe_epochs} epochs, early stop on held-out training slices) and a "
            f"linear probe on Fourier magnitudes"
        ),
        "nyul_available": nyul_available(),
        "best_epoch": run_metrics.get("best_epoch"),
        "epoch": epoch if epoch is not None else run_metrics.get("best_epoch"),
        "run_dir": str(run_dir),
        "data_dir": str(data.path),
        "baseline_dir": str(baseline_dir) if baseline_dir is not None else None,
        "seed": seed,
        "n_train_probe": int(len(x_train)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    history = run.read_history()
    figs = _draw(out_dir, metrics, history, x_test, g_test, y_test, lab_test, data, fid, n_panels)
    metrics["figures"] = {k: p.name for k, p in figs.items()}
    write_json_atomic(out_dir / "metrics.json", _finite(metrics))
    write_text_atomic(out_dir / "index.html", render_html(metrics, figs, history))
    return metrics


def _quantiles(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    q = np.quantile(v, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
    return dict(zip(("min", "p05", "p25", "median", "p75", "p95", "max"), map(float, q)))


def _finite(obj):
    """NaN and inf become null: JSON has no NaN and strict readers reject it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def _per_modality(data, lab_test: dict, y_test: np.ndarray, pred_co: np.ndarray, ssim: np.ndarray) -> dict:
    """The paper's Table 2: per modality, co-trained accuracy, SSIM, n, and counts per manufacturer."""
    modalities = data.classes("modality")
    manufacturers = data.classes("manufacturer")
    mod, man = lab_test["modality"], lab_test["manufacturer"]
    table = {}
    for index in sorted(set(mod.tolist())):
        rows = mod == index
        name = modalities[index] if 0 <= index < len(modalities) else "unknown"
        counts = {m: int(np.sum(rows & (man == j))) for j, m in enumerate(manufacturers)}
        unknown = int(np.sum(rows & (man < 0)))
        if unknown:
            counts["unknown"] = unknown
        table[name] = {
            "accuracy_cotrained": float(np.mean(pred_co[rows] == y_test[rows])),
            "ssim": float(np.mean(ssim[rows])),
            "n": int(rows.sum()),
            "counts": counts,
        }
    order = {m: i for i, m in enumerate(modalities)}
    return dict(sorted(table.items(), key=lambda kv: order.get(kv[0], len(order))))


def _draw(out_dir: Path, m: dict, history: list[dict], x_test, g_test, y_test, lab_test, data, fid, n_panels: int) -> dict:
    figs: dict[str, Path] = {}
    classes = m["classes"]
    figs["confusion_cotrained"] = figures.confusion_figure(
        m["confusion_cotrained"], classes, f"Co-trained classifier on G(X): acc {m['accuracy_cotrained']:.3f}",
        out_dir / "confusion_cotrained.png")
    if m["confusion_audit"] is not None:
        figs["confusion_audit"] = figures.confusion_figure(
            m["confusion_audit"], classes, f"Audit (DDS-style, fresh) on G(X): acc {m['accuracy_audit']:.3f}",
            out_dir / "confusion_audit.png")
    figs["confusion_audit_fourier"] = figures.confusion_figure(
        m["confusion_audit_fourier"], classes,
        f"Audit (Fourier linear probe, fresh) on G(X): acc {m['accuracy_audit_fourier']:.3f}",
        out_dir / "confusion_audit_fourier.png")
    if history:
        best = m.get("epoch")
        figs["history"] = figures.history_figure(history, m["chance"], out_dir / "history.png",
                                                 best_epoch=int(best) if best is not None else None, ssim_target=SSIM_TARGET)
    pick = _panel_indices(y_test, n_panels)
    modalities = data.classes("modality")
    captions = [
        f"{classes[y_test[i]]}\n{modalities[lab_test['modality'][i]] if lab_test['modality'][i] >= 0 else ''}\n"
        f"SSIM {fid['ssim'][i]:.3f}" for i in pick
    ]
    figs["panels"] = figures.panels_figure(x_test[pick], g_test[pick], captions, out_dir / "panels.png")
    figs["leakage"] = figures.leakage_figure(m["leakage"], m["chance"], out_dir / "leakage_vs_ssim.png",
                                             probe="stronger fresh probe")
    figs["fidelity"] = figures.distribution_figure(fid["ssim"], fid["psnr"], out_dir / "fidelity.png", SSIM_TARGET)
    return figs


def _panel_indices(y: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` test slices, one per class in turn, from the middle of each class's run."""
    picks: list[int] = []
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    rank = 0
    while len(picks) < min(n, len(y)):
        added = False
        for idx in by_class:
            if rank < len(idx) and len(picks) < n:
                picks.append(int(idx[(len(idx) // 2 + rank * 7) % len(idx)]))
                added = True
        rank += 1
        if not added:
            break
    return np.array(sorted(set(picks)), dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# text: the headline table and the HTML page


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _ci(pair) -> str:
    if not pair or pair[0] is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pair):
        return "n/a"
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


def headline_rows(m: dict) -> list[tuple[str, str, str]]:
    """(what, value, 95% CI) rows: the numbers a reader needs first."""
    ci = m.get("ci95", {})
    u = m.get("utility", {})
    return [
        ("chance (1 / classes)", _fmt(m["chance"]), ""),
        ("accuracy_original (baseline, originals)", _fmt(m["accuracy_original"]), _ci(ci.get("accuracy_original"))),
        ("accuracy_cotrained (GECO's classifier, G(X))", _fmt(m["accuracy_cotrained"]), _ci(ci.get("accuracy_cotrained"))),
        ("accuracy_audit (fresh DDS-style, G(X))", _fmt(m["accuracy_audit"]), _ci(ci.get("accuracy_audit"))),
        ("accuracy_audit_original (its power, X)", _fmt(m["accuracy_audit_original"]), _ci(ci.get("accuracy_audit_original"))),
        ("audit: Fourier linear probe, G(X)", _fmt(m["accuracy_audit_fourier"]), _ci(ci.get("accuracy_audit_fourier"))),
        ("audit: Fourier linear probe power, X", _fmt(m["accuracy_audit_fourier_original"]), _ci(ci.get("accuracy_audit_fourier_original"))),
        ("SSIM mean", _fmt(m["ssim"]), _ci(ci.get("ssim"))),
        ("PSNR mean (dB)", _fmt(m["psnr"], 2), _ci(ci.get("psnr"))),
        (f"utility_retained ({u.get('label') or 'n/a'})", _fmt(m["utility_retained"]), ""),
    ]


def headline_table(m: dict) -> str:
    """The headline rows as fixed-width text, ending with the verdict line (for the terminal)."""
    rows = headline_rows(m)
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    lines = [
        f"GECO evaluation: target {m['target']} ({len(m['classes'])} classes), test split {m['n_test']} slices"
        + (f", epoch {m['epoch']}" if m.get("epoch") is not None else ""),
        "",
        f"{'metric':<{w1}}  {'value':>{w2}}  95% CI",
        "-" * (w1 + w2 + 16),
    ]
    lines += [f"{a:<{w1}}  {b:>{w2}}  {c}" for a, b, c in rows]
    lines.append("")
    lines.append(f"VERDICT: {m['verdict']['text']}")
    return "\n".join(lines)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
td:first-child,th:first-child{text-align:left} th{background:#f3f3f3}
.verdict{font-size:1.15em;font-weight:600;padding:.8em 1em;border-radius:6px;margin:1em 0}
.SURVIVES{background:#fde2e1;border:2px solid #c0392b} .REMOVED{background:#e1f5e4;border:2px solid #2e8b57}
.INCONCLUSIVE,.REMOVED-LOW-FIDELITY{background:#fff4d6;border:2px solid #d4a017}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} .figs figure{margin:0;flex:1 1 320px;max-width:560px}
.figs.wide figure{max-width:100%;flex-basis:100%}
img{max-width:100%;height:auto;border:1px solid #eee} figcaption{font-size:.85em;color:#555}
.note{font-size:.9em;color:#444}
"""


def render_html(m: dict, figs: dict[str, Path], history: list[dict]) -> str:
    """One self-contained page: verdict, tables, and every figure inline as base64 PNG."""
    v = m["verdict"]
    man = list(next(iter(m["per_modality"].values()))["counts"]) if m["per_modality"] else []
    table2 = _table(
        ["Modality", "Accuracy (co-trained)", "SSIM", *man, "n"],
        [[name, _fmt(r["accuracy_cotrained"]), _fmt(r["ssim"]), *[r["counts"].get(k, 0) for k in man], r["n"]]
         for name, r in m["per_modality"].items()],
    )
    audits = _table(
        ["audit model (trained from scratch)", "accuracy on G(X)", "95% CI", "power: on X", "95% CI", "counts?"],
        [[a["model"], _fmt(a["accuracy"]), _ci(a["ci95"]), _fmt(a["accuracy_original"]), _ci(a["ci95_original"]),
          "yes" if a["accuracy_original"] is not None and a["accuracy_original"] >= AUDIT_POWER else "no: power < 0.90"]
         for a in m["audits"].values()],
    )
    leak = _table(
        ["method", "SSIM to original", "leakage (stronger probe)", "95% CI", "small CNN", "Fourier probe"],
        [[p["label"], _fmt(p["ssim"]), _fmt(p["leakage"]), _ci(p["ci95"]), _fmt(p.get("leakage_cnn")),
          _fmt(p.get("leakage_fourier"))] for p in m["leakage"]],
    )
    u = m["utility"]
    if u.get("label"):
        utility = _table(
            ["trained and tested on", f"{u['label']} accuracy ({' / '.join(u['classes'])})", "95% CI"],
            [["original images", _fmt(u["original"]["accuracy"]), _ci(u["original"]["ci95"])],
             ["generated images", _fmt(u["generated"]["accuracy"]), _ci(u["generated"]["ci95"])],
             ["utility_retained (ratio)", _fmt(u["utility_retained"]), ""]],
        )
    else:
        utility = f"<p>utility_retained not measured: {html.escape(u.get('why', ''))}</p>"

    def fig(key: str, caption: str) -> str:
        if key not in figs:
            return ""
        return f"<figure>{_img(figs[key], key)}<figcaption>{html.escape(caption)}</figcaption></figure>"

    nyul = "" if m.get("nyul_available") else (
        "<p class='note'>Nyul standardisation skipped: the <code>intensity-normalization</code> package is not installed.</p>")
    q = m.get("ssim_quantiles", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>GECO evaluation: {html.escape(m['target'])}</title>
<style>{STYLE}</style></head><body>
<h1>GECO evaluation report: {html.escape(m['target'])}</h1>
<p class="note">Run <code>{html.escape(m['run_dir'])}</code>, data <code>{html.escape(m['data_dir'])}</code>,
test split ({m['n_test']} slices), epoch {html.escape(str(m.get('epoch')))} (the run kept epoch
{html.escape(str(m.get('best_epoch')))}), created {html.escape(m['created'])}.</p>
<div class="verdict {html.escape(v['status'])}">VERDICT: {html.escape(v['text'])}</div>

<h2>Headline</h2>
{_table(["metric", "value", "95% CI"], headline_rows(m))}
<p class="note">accuracy_original: {html.escape(m['accuracy_original_source'])}.
95% intervals are Wilson score intervals over test slices (slices of one subject are correlated,
so they are if anything too narrow). An audit counts only where the same model reaches
{AUDIT_POWER:.2f} on original images; the signature counts as removed when every counting audit
is at most chance + {AUDIT_MARGIN:.2f} = {v['bar']:.2f}.</p>

<h2>Audit: fresh classifiers on generated images</h2>
<p>The co-trained classifier is the generator's sparring partner; these were trained from scratch on
generated training slices and tested on generated test slices, with two different architectures.</p>
{audits}
<div class="figs">
{fig("confusion_cotrained", "Co-trained classifier on generated test slices (paper Figure 2).")}
{fig("confusion_audit", "Fresh DDS-style audit classifier on generated test slices.")}
{fig("confusion_audit_fourier", "Fresh linear probe on Fourier magnitudes, generated test slices.")}
</div>

<h2>Fidelity</h2>
<p>SSIM {_fmt(m['ssim'])} &plusmn; {_fmt(m['ssim_std'])} (median {_fmt(q.get('median'))}, 5th percentile
{_fmt(q.get('p05'))}); PSNR {_fmt(m['psnr'], 2)} &plusmn; {_fmt(m['psnr_std'], 2)} dB.
SSIM: images in [-1, 1], max_val 2.0, 11x11 Gaussian window. PSNR: per slice,
10 log10(max(x)^2 / MSE(x, G(x))) with both mapped to [0, 1] first.</p>
<div class="figs">{fig("fidelity", "Per-slice SSIM and PSNR, test split.")}</div>
<h3>Per modality (paper Table 2 layout; number of images per manufacturer)</h3>
{table2}
<div class="figs">
{fig("panels", "Original, generated and absolute difference (paper Figure 1a-c); the difference has its own scale.")}
{fig("history", "SSIM (orange, left) and co-trained accuracy (blue, right) per epoch from history.csv (paper Figure 1g/h).")}
</div>

<h2>What is kept: utility</h2>
<p>The same small CNN learns a label that is not the scanner, once on originals and once on generated images.</p>
{utility}

<h2>GECO beside simple harmonisation</h2>
<p>Leakage: {html.escape(m['leakage_probe'])}; the <em>identity</em> row shows what each probe finds on original images.
Bottom right is best: low leakage at high SSIM.</p>
{nyul}
<div class="figs">{fig("leakage", "Leakage versus SSIM; GECO is the star.")}</div>
{leak}
</body></html>
"""

"""The report's figures, after the paper's Figures 1 and 2, as PNG files.

Each function draws one figure with matplotlib's non-interactive Agg backend (no display on a
server), writes it atomically and returns its path, so the HTML report can embed it and a user
can drop it into a slide.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from geco_tf.io import atomic_path

DPI = 110
ORANGE, BLUE, GREY = "#e07b00", "#1f5fbf", "#777777"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _plt()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def _short(names: Sequence[str], width: int = 12) -> list[str]:
    return [n if len(n) <= width else n[: width - 1] + "." for n in names]


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str, path: str | os.PathLike) -> Path:
    """Confusion matrix (rows true, columns predicted), counts and row fractions (Figure 2)."""
    plt = _plt()
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.2, 1.1 * len(classes) + 1.6))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{frac[i, j]:.2f}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=8)
    ticks = range(len(classes))
    ax.set_xticks(ticks, _short(classes), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(ticks, _short(classes), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return _save(fig, path)


def history_figure(history: Sequence[Mapping[str, str]], chance: float, path: str | os.PathLike,
                   best_epoch: int | None = None, ssim_target: float | None = 0.97) -> Path:
    """SSIM (orange, left axis) and co-trained accuracy (blue, right axis) per epoch (Fig. 1g/h),
    and the fresh probe's accuracy when the run recorded it (``--selection-probe``)."""
    plt = _plt()

    def column(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in history])

    epochs = column("epoch")
    fig, ax1 = plt.subplots(figsize=(6.4, 4.2))
    ax2 = ax1.twinx()
    if "val_ssim" in history[0]:
        ax1.plot(epochs, column("val_ssim"), "o-", color=ORANGE, label="SSIM (val)")
    if ssim_target is not None:
        ax1.axhline(ssim_target, color=ORANGE, ls=":", lw=1)
    if "val_accuracy_cotrained" in history[0]:
        ax2.plot(epochs, column("val_accuracy_cotrained"), "s-", color=BLUE, label="co-trained accuracy (val)")
    probe = column("val_accuracy_probe")  # NaN where the run has no fresh probe
    if not np.isnan(probe).all():  # runs with --selection-probe: the fresh probe chose the epoch too
        ax2.plot(epochs, probe, "^--", color=BLUE, alpha=0.6, label="fresh probe accuracy (val)")
    ax2.axhline(chance, color=BLUE, ls="--", lw=1, label=f"chance {chance:.2f}")
    if best_epoch is not None:
        ax1.axvline(best_epoch, color=GREY, ls="-.", lw=1, label=f"kept epoch {best_epoch}")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("SSIM", color=ORANGE)
    ax2.set_ylabel("accuracy", color=BLUE)
    ax2.set_ylim(0, 1.02)
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    ax1.set_title("Training: SSIM and co-trained accuracy per epoch", fontsize=10)
    return _save(fig, path)


def panels_figure(originals: np.ndarray, generated: np.ndarray, captions: Sequence[str], path: str | os.PathLike) -> Path:
    """Rows of original / generated / |difference| (Figure 1a-c); the difference has its own
    scale, printed in the title, because it is small."""
    plt = _plt()
    n = len(originals)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n + 0.3), squeeze=False)
    for i in range(n):
        x, g = originals[i, ..., 0], generated[i, ..., 0]
        diff = np.abs(x - g)
        axes[i, 0].imshow(x, cmap="gray", vmin=-1, vmax=1)
        axes[i, 1].imshow(g, cmap="gray", vmin=-1, vmax=1)
        im = axes[i, 2].imshow(diff, cmap="gray", vmin=0, vmax=max(float(diff.max()), 1e-6))
        axes[i, 0].set_ylabel(captions[i], fontsize=8)
        axes[i, 2].set_title(f"max {diff.max():.3f}", fontsize=8)
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046, pad=0.04)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("original", "generated G(X)", "|X - G(X)|")):
        ax.set_title(title + ("\n" + ax.get_title() if ax.get_title() else ""), fontsize=9)
    return _save(fig, path)


def leakage_figure(points: Sequence[Mapping], chance: float, path: str | os.PathLike, probe: str = "small CNN") -> Path:
    """Leakage (accuracy of a fresh probe trained and tested on the harmonised images) against
    SSIM to the originals, GECO beside the harmonisation baselines. Bottom right is best."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    placed: list[tuple[float, float]] = []
    for p in points:
        geco = p.get("kind") == "geco"
        low, high = p.get("ci95", [np.nan, np.nan])
        yerr = [[p["leakage"] - low], [high - p["leakage"]]] if np.isfinite(low) else None
        ax.errorbar(p["ssim"], p["leakage"], yerr=yerr, fmt="*" if geco else "o", ms=14 if geco else 7,
                    color="#c0392b" if geco else BLUE, capsize=3)
        # Points that nearly coincide (blur-0.5 and identity both at SSIM ~1, leakage 1) get their
        # labels stacked downwards instead of printed over each other.
        near = sum(abs(x - p["ssim"]) < 0.05 and abs(y - p["leakage"]) < 0.06 for x, y in placed)
        placed.append((p["ssim"], p["leakage"]))
        ax.annotate(p["name"], (p["ssim"], p["leakage"]), textcoords="offset points", xytext=(6, 4 - 11 * near),
                    fontsize=8)
    ax.axhline(chance, color=GREY, ls="--", lw=1, label=f"chance {chance:.2f}")
    ax.set_xlabel("SSIM to the original (test split)")
    ax.set_ylabel(f"leakage: {probe} accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("Scanner leakage vs fidelity: GECO (star) and harmonisation baselines", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def distribution_figure(ssim: np.ndarray, psnr: np.ndarray, path: str | os.PathLike, ssim_target: float = 0.97) -> Path:
    """Histograms of per-slice SSIM and PSNR on the test split."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.hist(ssim, bins=30, color=ORANGE)
    a.axvline(ssim_target, color="k", ls=":", lw=1, label=f"target {ssim_target}")
    a.axvline(float(np.mean(ssim)), color="k", lw=1, label=f"mean {np.mean(ssim):.3f}")
    a.set_xlabel("SSIM per slice")
    a.legend(fontsize=8)
    finite = psnr[np.isfinite(psnr)]
    b.hist(finite, bins=30, color=BLUE)
    if finite.size:
        b.axvline(float(np.mean(finite)), color="k", lw=1, label=f"mean {np.mean(finite):.1f} dB")
        b.legend(fontsize=8)
    b.set_xlabel("PSNR per slice (dB)")
    for ax in (a, b):
        ax.set_ylabel("slices")
    fig.suptitle("Fidelity on the test split", fontsize=10)
    return _save(fig, path)

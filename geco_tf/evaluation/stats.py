"""Confidence intervals for the numbers the report prints.

A test split of a few hundred slices leaves every accuracy with an uncertainty of several points;
an audit at 0.38 and one at 0.42 may not differ at all. Each accuracy therefore carries a 95%
Wilson score interval (Wilson 1927), which, unlike the normal approximation, stays inside [0, 1]
and behaves at accuracies near 0 or 1 and at small n. Means (SSIM, PSNR) carry a normal
interval on the mean, fine at the n of a test split.

Slices of one subject are correlated, so these intervals are, if anything, too narrow; the report
says the unit is a slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Returns ``(nan, nan)`` when ``n == 0`` (no evidence either way, rather than a fake [0, 1]).
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside [0, {n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_ci(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> dict:
    """Accuracy of ``y_pred`` against ``y_true`` with its 95% Wilson interval and n."""
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"label shapes differ: {y_true.shape} vs {y_pred.shape}")
    n = int(y_true.size)
    k = int(np.sum(y_true == y_pred))
    low, high = wilson_interval(k, n)
    return {"accuracy": k / n if n else math.nan, "ci95": [low, high], "n": n}


def proportion_ci(accuracy: float, n: int) -> list[float]:
    """Wilson interval for an accuracy known only as a fraction of ``n`` (e.g. from a library
    call that returns the number alone): the count is recovered by rounding."""
    if n <= 0 or accuracy is None or not math.isfinite(accuracy):
        return [math.nan, math.nan]
    k = int(round(float(accuracy) * n))
    return list(wilson_interval(min(max(k, 0), n), n))


def mean_ci(values: Sequence[float] | np.ndarray, z: float = Z95) -> dict:
    """Mean, standard deviation, normal 95% interval of the mean, and n of finite ``values``."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    n = int(values.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half = z * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int) -> list[list[int]]:
    """``n_classes`` x ``n_classes`` counts; rows are true labels, columns predictions."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix.tolist()

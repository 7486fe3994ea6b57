"""Agreement between predicted quality and human scores: SRCC, KRCC, PLCC, RMSE.

Definitions (n pairs of prediction x and subjective score y):

* SRCC - Spearman: Pearson correlation of the ranks of x and y (ties get their average rank).
* KRCC - Kendall tau-b: (concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y)),
  n0 = n(n-1)/2.
* PLCC and RMSE are reported twice: ``*_raw`` directly on x, and (the headline ``plcc``/``rmse``)
  after mapping x onto the subjective scale with the VQEG 4-parameter logistic

      f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2

  fitted by least squares (scipy.optimize.curve_fit). Start values: b1 = max(y), b2 = min(y)
  (swapped when x and y are negatively correlated, so the curve starts with the right
  direction), b3 = mean(x), b4 = std(x); the Jacobian is analytic. With fewer than 5 points,
  or if the fit raises or gives non-finite output, the
  mapping falls back to a least-squares straight line (``fit="linear"``); a constant x gives
  ``fit="none"`` and NaN PLCC.

SRCC and KRCC do not depend on the mapping and keep their sign; the mapped PLCC absorbs the
direction (an anti-correlated predictor gets a decreasing curve and a positive mapped PLCC). Correlations of constant input are NaN.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray
FitKind = Literal["logistic", "linear", "none"]


def _pair(predicted: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(predicted, dtype=np.float64).reshape(-1)
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predicted has {x.size} values but target has {y.size}")
    if x.size < 2:
        raise ValueError("need at least 2 pairs to compute a correlation")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predicted and target must be finite (no NaN/inf)")
    return x, y


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denominator if denominator > 0 else math.nan


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they occupy."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def srcc(predicted: ArrayLike, target: ArrayLike) -> float:
    x, y = _pair(predicted, target)
    return _pearson(average_ranks(x), average_ranks(y))


def krcc(predicted: ArrayLike, target: ArrayLike) -> float:
    """Kendall tau-b; O(n^2) pair comparisons done one row at a time (fine for test sets of ~10k)."""
    x, y = _pair(predicted, target)
    concordance = 0.0
    untied_x = untied_y = 0
    for i in range(x.size - 1):
        sx = np.sign(x[i + 1:] - x[i])
        sy = np.sign(y[i + 1:] - y[i])
        concordance += float(sx @ sy)
        untied_x += int(np.count_nonzero(sx))
        untied_y += int(np.count_nonzero(sy))
    denominator = math.sqrt(untied_x * untied_y)
    return concordance / denominator if denominator > 0 else math.nan


def plcc(predicted: ArrayLike, target: ArrayLike) -> float:
    """Pearson correlation of the raw values (no mapping)."""
    return _pearson(*_pair(predicted, target))


def rmse(predicted: ArrayLike, target: ArrayLike) -> float:
    x, y = _pair(predicted, target)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def logistic_4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: b2 at -inf, b1 at +inf, midpoint b3, slope scale |b4|."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / max(abs(b4), 1e-12), -500.0, 500.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _logistic_jacobian(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """Analytic derivatives: finite differences stall when a start value is ~0 (b3 = mean(x))."""
    scale = max(abs(b4), 1e-12)
    e = np.exp(np.clip(-(x - b3) / scale, -500.0, 500.0))
    d = 1.0 + e
    common = -(b1 - b2) * e / (scale * d * d)
    return np.stack([1.0 / d, 1.0 - 1.0 / d, common, common * (x - b3) / scale * np.sign(b4 or 1.0)], axis=1)


@dataclass(frozen=True)
class MappingFit:
    """The monotonic map from predictions to the subjective scale used for PLCC/RMSE."""

    kind: FitKind
    params: tuple[float, ...]  # logistic: (b1, b2, b3, b4); linear: (slope, intercept); none: ()

    def apply(self, x: ArrayLike) -> np.ndarray:
        values = np.asarray(x, dtype=np.float64)
        if self.kind == "logistic":
            return logistic_4(values, *self.params)
        if self.kind == "linear":
            return self.params[0] * values + self.params[1]
        return values


def fit_logistic(predicted: ArrayLike, target: ArrayLike, max_evaluations: int = 20000) -> MappingFit:
    """Fit the 4-parameter logistic (start values and fallback in the module docstring)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    x, y = _pair(predicted, target)
    if np.ptp(x) == 0:
        return MappingFit("none", ())
    if x.size < 5:  # four parameters need more points than that to mean anything
        slope, intercept = np.polyfit(x, y, 1)
        return MappingFit("linear", (float(slope), float(intercept)))
    increasing = _pearson(x, y) >= 0 if np.ptp(y) > 0 else True
    high, low = float(y.max()), float(y.min())
    start = (high if increasing else low, low if increasing else high, float(x.mean()), float(x.std()) or 1.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = curve_fit(logistic_4, x, y, p0=start, jac=_logistic_jacobian,
                                  maxfev=max_evaluations)
        fitted = MappingFit("logistic", tuple(float(p) for p in params))
        if np.isfinite(params).all() and np.isfinite(fitted.apply(x)).all():
            return fitted
    except (RuntimeError, ValueError):
        pass  # no convergence or a degenerate problem: the documented linear fallback below
    slope, intercept = np.polyfit(x, y, 1)
    return MappingFit("linear", (float(slope), float(intercept)))


@dataclass(frozen=True)
class QualityMetrics:
    """All agreement figures for one set of predictions; ``plcc``/``rmse`` are after the mapping."""

    n: int
    srcc: float
    krcc: float
    plcc: float
    rmse: float
    plcc_raw: float
    rmse_raw: float
    fit: FitKind

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def quality_metrics(predicted: ArrayLike, target: ArrayLike) -> QualityMetrics:
    """Every metric for predictions vs subjective scores (same scale for ``rmse_raw`` to mean much)."""
    x, y = _pair(predicted, target)
    mapping = fit_logistic(x, y)
    mapped = mapping.apply(x)
    return QualityMetrics(n=int(x.size), srcc=srcc(x, y), krcc=krcc(x, y),
                          plcc=_pearson(mapped, y) if mapping.kind != "none" else math.nan,
                          rmse=float(np.sqrt(np.mean((mapped - y) ** 2))),
                          plcc_raw=_pearson(x, y), rmse_raw=rmse(x, y), fit=mapping.kind)

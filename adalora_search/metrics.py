"""Validation metrics from maintained implementations (scikit-learn, SciPy)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

CLASSIFICATION = ("accuracy", "f1_macro", "mcc")
REGRESSION = ("pearson", "spearman")


def compute(predictions: np.ndarray, labels: np.ndarray, regression: bool) -> dict[str, float]:
    """Task metrics of one evaluation pass; NaN-free (a constant prediction scores 0 correlation)."""
    if regression:
        if np.std(predictions) == 0 or np.std(labels) == 0:
            return {"pearson": 0.0, "spearman": 0.0}
        return {"pearson": _finite(stats.pearsonr(predictions, labels)[0]),
                "spearman": _finite(stats.spearmanr(predictions, labels)[0])}
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)),
    }


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) else float(value)


def is_better(metric: str, new: float, old: float | None) -> bool:
    """True when ``new`` beats ``old`` for this metric (lower is better only for eval_loss)."""
    if old is None:
        return True
    return new < old if metric == "eval_loss" else new > old

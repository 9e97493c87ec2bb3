"""Statistics over paired replays (issue #34, item 4): regret, ranks, random-to-grid, Wilcoxon, anytime curves.

Every arm is replayed with the same seeds 0..R-1, so replay r of two arms is a pair (same run draws, and the
same start-up draws where both samplers start with Optuna's random sampler). For the configuration an arm
chose after n trials (its best validation so far):

- **normalized regret** = (best - true(chosen)) / (best - worst), 0 = the table's best configuration,
  where true() is the configuration's mean final validation metric over the table's seeds, and best / worst
  are the extremes of that mean over the table (HPO-B's normalisation); an arm that chose nothing scores 1;
- **true test** = the chosen configuration's mean test metric over the seeds (what it is really worth,
  apart from the validation noise the search may have fitted);
- **random-to-grid score** = (mean true(chosen) - random's) / (best - random's): 0 = random search at the
  same number of trials, 1 = the grid's best;
- **mean rank** of the arms' regrets per replay (1 = best; ties share the mean rank);
- **Wilcoxon signed-rank** p-values of the paired regrets against random and against the default
  (two-sided; 1.0 when every pair ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from .replay import Replay, Table


def regret(table: Table, params: dict[str, Any] | None) -> float:
    """Normalized regret of choosing ``params`` (1.0 for no choice)."""
    if params is None:
        return 1.0
    best, worst = table.extremes()
    value = table.true(params)
    if value is None or best == worst:
        return 1.0 if value is None else 0.0
    return float((best - value) / (best - worst))


def chosen_values(table: Table, replays: Sequence[Replay], n: int) -> dict[str, np.ndarray]:
    """Per replay, after ``n`` trials: regret, true validation and true test of the chosen configuration,
    optimizer steps and seconds spent."""
    rows = []
    for r in replays:
        params = r.chosen(n)
        steps, seconds = r.cost(n)
        val = table.true(params) if params else None
        test = table.true(params, "test") if params else None
        rows.append((regret(table, params), np.nan if val is None else val, np.nan if test is None else test))
        rows[-1] += (steps, seconds)
    arr = np.array(rows, dtype=float)
    keys = ("regret", "true_validation", "true_test", "steps", "seconds")
    return {k: arr[:, i] for i, k in enumerate(keys)}


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences a - b (1.0 when all tie)."""
    diff = np.asarray(a) - np.asarray(b)
    if not np.any(diff != 0):
        return 1.0
    return float(sps.wilcoxon(diff, zero_method="wilcox").pvalue)


def mean_ranks(regrets: dict[str, np.ndarray]) -> dict[str, float]:
    """Each arm's mean rank over the replays (rank 1 = lowest regret in that replay)."""
    arms = list(regrets)
    matrix = np.vstack([regrets[a] for a in arms])  # arms x replays
    ranks = np.apply_along_axis(sps.rankdata, 0, matrix)
    return {a: float(ranks[i].mean()) for i, a in enumerate(arms)}


def summarize(
    table: Table,
    replays: dict[str, Sequence[Replay]],
    budgets: Sequence[int],
    reference: str = "random",
    default: str = "default",
) -> dict[str, Any]:
    """Per budget (trials) and arm: mean and 95 % interval of regret, true validation, true test, steps and
    seconds; random-to-grid score, mean rank, and Wilcoxon p against ``reference`` and ``default``."""
    best, _ = table.extremes()
    out: dict[str, Any] = {}
    for n in budgets:
        values = {arm: chosen_values(table, rs, n) for arm, rs in replays.items()}
        ranks = mean_ranks({arm: v["regret"] for arm, v in values.items()})
        ref = values.get(reference)
        rows = {}
        for arm, v in values.items():
            row = {key: _mean_ci(v[key]) for key in ("regret", "true_validation", "true_test", "steps", "seconds")}
            row["mean_rank"] = ranks[arm]
            if ref is not None:
                base = float(np.nanmean(ref["true_validation"]))
                gap = (best - base) if table.maximize else (base - best)
                mine = float(np.nanmean(v["true_validation"]))
                row["random_to_grid"] = ((mine - base) if table.maximize else (base - mine)) / gap if gap else 0.0
                row[f"p_vs_{reference}"] = wilcoxon_p(v["regret"], ref["regret"])
            if default in values:
                row[f"p_vs_{default}"] = wilcoxon_p(v["regret"], values[default]["regret"])
            rows[arm] = row
        out[str(n)] = rows
    return out


def _mean_ci(x: np.ndarray) -> dict[str, float]:
    """Mean and the half-width of its normal 95 % interval (1.96 standard errors), NaNs left out."""
    x = x[~np.isnan(x)]
    if not len(x):
        return {"mean": float("nan"), "ci95": float("nan")}
    half = 1.96 * float(np.std(x, ddof=1)) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return {"mean": float(np.mean(x)), "ci95": half}


def anytime(table: Table, replays: Sequence[Replay], step_grid: Sequence[int]) -> list[float]:
    """Mean normalized regret of the best-so-far configuration against optimizer steps spent: at each
    budget S of ``step_grid``, the best complete query among those whose cumulative steps fit in S."""
    curves = []
    for r in replays:
        cum = np.cumsum([q.steps for q in r.queries])
        curves.append([regret(table, r.chosen(int(np.searchsorted(cum, s, side="right")))) for s in step_grid])
    return [float(v) for v in np.mean(curves, axis=0)]

"""PNG figures of a study (matplotlib, Agg backend): where the rank budget went, and how the search went."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

from adalora_search import files  # noqa: E402
from adalora_search.search.record import TrialRecord  # noqa: E402


def heatmap(table: pd.DataFrame, title: str, path: Path, fmt: str = "{:.0f}", label: str = "rank") -> Path:
    """Layers (rows) x module types (columns), as the AdaLoRA paper's figure of allocated ranks."""
    fig, ax = plt.subplots(figsize=(1.2 * max(len(table.columns), 3) + 2, 0.5 * max(len(table), 3) + 1.5))
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="YlGn", aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(table.index)), ["pooler" if i == -1 else f"layer {i}" for i in table.index])
    for (r, c), v in np.ndenumerate(values):
        if np.isnan(v):  # no trial adapted this cell; 0 would mean adapted and pruned away
            ax.text(c, r, "n/a", ha="center", va="center", fontsize=7, color="gray")
        else:
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if v > np.nanmax(values) * 0.6 else "black")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title)
    return _save(fig, path)


def budget_curves(trials: list[optuna.trial.FrozenTrial], path: Path) -> Path:
    """Total rank over optimizer steps: hold (t_init), cubic cuts, frozen final phase."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        record = TrialRecord.of(t)
        points = list(record.budget_curve or [[0, 0]])
        total = record.total_steps
        if total and points[-1][0] < total:  # the final allocation holds until the last step
            points.append([total, points[-1][1]])
        curve = np.array(points)
        ax.step(curve[:, 0], curve[:, 1], where="post", label=f"trial {t.number} ({t.values[0]:.3f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("total rank (budget)")
    ax.set_title("AdaLoRA budget schedule of the top trials")
    ax.legend(fontsize=8)
    return _save(fig, path)


def metric_vs_params(trials: pd.DataFrame, metric: str, maximize: bool, path: Path) -> Path:
    """Validation metric against final trainable parameters, with the Pareto front."""
    fig, ax = plt.subplots(figsize=(7, 4))
    done = trials[(trials["state"] == "COMPLETE") & trials[f"final_{metric}"].notna()]
    ax.scatter(done["params_final"], done[f"final_{metric}"], c="tab:blue", label="trials")
    base = done[done["baseline"] != ""]
    ax.scatter(base["params_final"], base[f"final_{metric}"], c="tab:red", marker="s", label="baselines")
    front = _pareto(done[["params_final", f"final_{metric}"]].to_numpy(dtype=float), maximize)
    if len(front):
        ax.plot(front[:, 0], front[:, 1], "k--", label="Pareto front")
    ax.set_xlabel("trainable parameters after rank pruning")
    ax.set_ylabel(f"validation {metric}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _pareto(points: np.ndarray, maximize: bool) -> np.ndarray:
    """Points no other point beats on both fewer parameters and a better metric."""
    if not len(points):
        return points
    sign = 1 if maximize else -1
    order = points[np.argsort(points[:, 0])]
    front, best = [], -np.inf
    for params, value in order:
        if sign * value > best:
            front.append((params, value))
            best = sign * value
    return np.array(front)


def intermediate(study: optuna.Study, metric: str, path: Path) -> Path:
    """Validation metric over steps per trial; an x marks where the trial pruner stopped a trial."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        steps, values = zip(*sorted(t.intermediate_values.items()))
        pruned = t.state == optuna.trial.TrialState.PRUNED
        ax.plot(steps, values, color="tab:gray" if pruned else "tab:blue", alpha=0.7, lw=1)
        if pruned:
            ax.plot(steps[-1], values[-1], "rx")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Intermediate values (grey + red x: trial pruned)")
    return _save(fig, path)


def history(study: optuna.Study, metric: str, path: Path) -> Path:
    """Optuna's optimisation history (objective per trial, best so far) on the first objective."""
    with _optuna_plot():
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target=_first_objective(study), target_name=f"objective ({metric})")
    return _save(ax.figure, path)


def importances(study: optuna.Study, path: Path) -> Path | None:
    """Optuna's parameter importances (its default evaluator); None when too few trials to judge."""
    try:
        with _optuna_plot():
            ax = optuna.visualization.matplotlib.plot_param_importances(
                study, target=_first_objective(study, for_importance=True), target_name="objective")
    except (RuntimeError, ValueError, ZeroDivisionError):
        return None
    if not ax.patches:  # nothing to rank (e.g. no knob varied across completed trials)
        plt.close(ax.figure)
        return None
    return _save(ax.figure, path)


def _first_objective(study: optuna.Study, for_importance: bool = False) -> Callable[[FrozenTrial], float] | None:
    """None for a single objective (Optuna reads its direction); else the first value, negated for
    importances when maximised (Optuna's evaluator ranks params by how they reach low values).
    """
    if len(study.directions) == 1:
        return None
    sign = -1.0 if for_importance and study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return lambda t: sign * t.values[0]


@contextlib.contextmanager
def _optuna_plot() -> Iterator[None]:
    """Optuna's matplotlib plots are experimental in Optuna 5: used as they are, without the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*(target_name|to achieve low|No artists)")
        yield


def _save(fig: plt.Figure, path: Path) -> Path:
    """The figure as a PNG at ``path``, written whole (``files.write_bytes``)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    files.write_bytes(path, buffer.getvalue())
    return path

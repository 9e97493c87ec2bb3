"""PNG figures of a study (matplotlib, Agg backend): where the rank budget went, and how the search went."""

from __future__ import annotations

import contextlib
import functools
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
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

from adalora_search import files  # noqa: E402
from adalora_search.search import ranking  # noqa: E402
from adalora_search.search.record import TrialRecord  # noqa: E402

STYLE = "ggplot"  # the style of Optuna's matplotlib plots: every figure of the report in one style


def _styled(plot: Callable[..., Path | None]) -> Callable[..., Path | None]:
    """Draw ``plot`` in ``STYLE`` without changing matplotlib's settings for anyone else."""

    @functools.wraps(plot)
    def draw(*args: object, **kwargs: object) -> Path | None:
        with plt.style.context(STYLE):
            return plot(*args, **kwargs)

    return draw


@_styled
def heatmap(table: pd.DataFrame, title: str, path: Path, fmt: str = "{:.0f}", label: str = "rank") -> Path:
    """Layers (rows) x modules (columns), as the AdaLoRA paper's figure of allocated ranks."""
    fig, ax = plt.subplots(figsize=(1.2 * max(len(table.columns), 3) + 2, 0.5 * max(len(table), 3) + 1.5))
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="YlGn", aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(table.index)), ["pooler" if i == -1 else f"layer {i}" for i in table.index])
    for (r, c), v in np.ndenumerate(values):
        if np.isnan(v):  # no trial adapted this cell; 0 would mean adapted and pruned away
            ax.text(c, r, "n/a", ha="center", va="center", fontsize=7, color="gray")
        else:
            ax.text(
                c,
                r,
                fmt.format(v),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if v > np.nanmax(values) * 0.6 else "black",
            )
    ax.grid(False)
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title)
    return _save(fig, path)


@_styled
def budget_curves(trials: list[optuna.trial.FrozenTrial], metric: str, path: Path) -> Path:
    """Total rank over optimizer steps: hold (t_init), cubic cuts, frozen final phase; each trial's line is
    labelled with its objective value (``metric``).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        record = TrialRecord.of(t)
        points = list(record.budget_curve or [[0, 0]])
        total = record.total_steps
        if total and points[-1][0] < total:  # the final allocation holds until the last step
            points.append([total, points[-1][1]])
        curve = np.array(points)
        ax.step(curve[:, 0], curve[:, 1], where="post", label=f"trial {t.number}: {metric} {t.values[0]:.4f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("total rank (budget)")
    ax.set_title("AdaLoRA budget schedule of the top trials")
    ax.legend(fontsize=8)
    return _save(fig, path)


@_styled
def metric_vs_params(trials: pd.DataFrame, metric: str, maximize: bool, path: Path) -> Path:
    """Validation metric against final trainable parameters, with the Pareto front (a legend entry only for
    what is drawn).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    done = trials[(trials["state"] == "COMPLETE") & trials[f"final_{metric}"].notna()]
    base = done[done["baseline"] != ""]
    searched = done[done["baseline"] == ""]
    if len(searched):
        ax.scatter(searched["params_final"], searched[f"final_{metric}"], c="tab:blue", label="trials")
    if len(base):
        ax.scatter(base["params_final"], base[f"final_{metric}"], c="tab:red", marker="s", label="baselines")
    front = _pareto(done[["params_final", f"final_{metric}"]].to_numpy(dtype=float), maximize)
    if len(front) > 1:  # a step: a point is beaten by any front point with fewer parameters and a better metric
        ax.step(front[:, 0], front[:, 1], "k--", where="post", lw=1, label="Pareto front (no trial is better on both)")
    ax.set_xlabel("trainable parameters after rank pruning")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Validation {metric} vs trainable parameters\n({len(done)} completed trials)", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
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


@_styled
def intermediate(study: optuna.Study, metric: str, path: Path) -> Path:
    """Validation metric over steps, one line per trial: completed trials in blue, trial-pruned ones in grey
    with an x where the trial pruner stopped them, the best trial in black.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    best = ranking.best(study)
    labels = {"complete": "completed trials", "pruned": "trial-pruned trials", "stop": "stopped by the trial pruner"}
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        steps, values = zip(*sorted(t.intermediate_values.items()))
        pruned = t.state == optuna.trial.TrialState.PRUNED
        if best is not None and t.number == best.number:
            ax.plot(steps, values, color="black", lw=2, label=f"best trial ({t.number})", zorder=3)
        else:
            ax.plot(
                steps,
                values,
                color="tab:gray" if pruned else "tab:blue",
                alpha=0.7,
                lw=1,
                label=labels.pop("pruned" if pruned else "complete", None),
            )
        if pruned:
            ax.plot(steps[-1], values[-1], "rx", label=labels.pop("stop", None))
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Validation {metric} at each evaluation\n(what the trial pruner reads)", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


@_styled
def history(study: optuna.Study, metric: str, path: Path) -> Path | None:
    """Optuna's optimisation history (objective per trial, best so far) on the first objective, trial numbers
    as whole numbers; None before a trial completes (nothing to draw, and Optuna would say so on its logger).
    """
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    with _optuna_plot():
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target=_first_objective(study), target_name=f"objective ({metric})"
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Optimisation history: the objective of each trial, and the best so far", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")  # inside the axes: Optuna's sits outside and squeezes the plot
    return _save(ax.figure, path)


MIN_TRIALS_FOR_IMPORTANCE = 8  # fewer completed trials rank the knobs by noise


def importances(study: optuna.Study, path: Path) -> Path | None:
    """Optuna's parameter importances (its default evaluator); None when too few trials to judge: fewer than
    ``MIN_TRIALS_FOR_IMPORTANCE`` completed, no importance at all, or every knob given the same one.
    """
    if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    return _importances(study, path)


@_styled
def _importances(study: optuna.Study, path: Path) -> Path | None:
    try:
        with _optuna_plot():
            ax = optuna.visualization.matplotlib.plot_param_importances(
                study, target=_first_objective(study, for_importance=True), target_name="objective"
            )
    except (RuntimeError, ValueError, ZeroDivisionError):
        return None
    widths = [p.get_width() for p in ax.patches]
    if not widths or max(widths) - min(widths) < 1e-9:  # nothing to rank, or too few trials to rank them
        plt.close(ax.figure)
        return None
    ax.set_title("", loc="left")  # Optuna's own title sits on the left, under ours
    ax.set_title("Parameter importances (Optuna's default evaluator, on the objective)", fontsize=11)
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
        warnings.filterwarnings(
            "ignore",
            message=".*(target_name|to achieve low|No artists|quantiles select the same|number of trials is too small)",
        )
        yield


def _save(fig: plt.Figure, path: Path) -> Path:
    """The figure as a PNG at ``path``, written whole (``files.write_bytes``)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    files.write_bytes(path, buffer.getvalue())
    return path

"""Replay a search strategy against a table: Optuna's samplers and pruners, unchanged, through ask/tell.

The space is the table's grid. A knob with three or more numeric choices is offered to the sampler as the
range it would be in a live study (log-scaled when its choices span more than 3x) and the suggestion is
snapped to the nearest choice (``numeric="snap"``, the default), so samplers that model numbers (TPE, GP,
QMC) see numbers; ``numeric="categorical"`` offers every knob as its list of choices instead. Each query
returns one training seed's run, drawn at random (the draws depend on the replay seed and the trial's
number only, so two arms replayed with the same seed see the same draws at the same trial numbers); its
validation curve is reported through ``trial.report`` so a pruner acts on a real curve; cost is counted
in optimizer steps (and in seconds, the run's wall time prorated to the steps used).

    table = Table(read_table("bench/tables/t1_bbc_news_minilm.json.gz"))
    result = replay(table, ARMS["tpe"], seed=0, n_trials=64)
    result.chosen(16)  # the configuration the arm would pick after 16 trials (best validation so far)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

Params = dict[str, Any]


def config_key(params: Params) -> str:
    """One configuration's key in a table (its parameters, sorted)."""
    return repr(sorted(params.items()))


class Table:
    """A table (``table.read_table``) indexed for lookups: runs per configuration, true means over seeds."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.space: dict[str, list[Any]] = data["space"]
        self.metric: str = data["objective"]["metric"]
        self.maximize = data["objective"]["direction"] == "maximize"
        self.runs = {config_key(c["params"]): c["runs"] for c in data["configs"]}
        self.n_grid = math.prod(len(v) for v in self.space.values())
        self.complete = len(self.runs) == self.n_grid
        self._memo: dict[tuple, Any] = {}  # true() and extremes() are asked millions of times by the statistics

    def nearest(self, params: Params) -> Params:
        """The configuration of the table closest to ``params``: per knob, 0 when equal, else the distance between
        the two choices' positions in the knob's list over the list's length (categorical knobs: 1); ties go to the
        configuration first in the table's order."""

        def distance(other: Params) -> float:
            total = 0.0
            for knob, choices in self.space.items():
                a, b = params[knob], other[knob]
                numbers = all(isinstance(c, (int, float)) for c in choices) and len(choices) > 1
                total += (
                    0 if a == b else abs(choices.index(a) - choices.index(b)) / (len(choices) - 1) if numbers else 1
                )
            return total

        return min((c["params"] for c in self.data["configs"]), key=distance)

    def first_rung(self) -> int:
        """The first evaluation step after the latest ``t_init`` of the table's study file: where the tool's
        ``prune_warmup: after_t_init`` lets a trial pruner act."""
        study = yaml.safe_load(self.data["study_file"])
        schedule, every = study["adalora"]["schedule"], study["training"]["eval_every"]
        t_init = schedule["t_init"]
        high = max(t_init["choices"]) if isinstance(t_init, dict) and "choices" in t_init else t_init
        high = t_init.get("high", high) if isinstance(t_init, dict) else high
        steps = math.floor(high * self.data["total_steps"]) if schedule.get("unit") == "fraction" else int(high)
        return min((steps // every + 1) * every, self.data["total_steps"])

    def true(self, params: Params, split: str = "validation", metric: str | None = None) -> float | None:
        """The configuration's mean final ``metric`` on ``split`` over its seeds' complete runs (None: none)."""
        metric = metric or self.metric
        memo = (config_key(params), split, metric)
        if memo not in self._memo:
            self._memo[memo] = self._true(params, split, metric)
        return self._memo[memo]

    def _true(self, params: Params, split: str, metric: str) -> float | None:
        values = [
            r[split][metric]
            for r in self.runs.get(config_key(params), {}).values()
            if r["state"] == "COMPLETE" and r[split].get(metric) is not None
        ]
        return float(np.mean(values)) if values else None

    def extremes(self, split: str = "validation") -> tuple[float, float]:
        """(best, worst) true mean of ``split``'s objective metric over the configurations with a run."""
        if ("extremes", split) in self._memo:
            return self._memo["extremes", split]
        means = [m for m in (self.true(c["params"], split) for c in self.data["configs"]) if m is not None]
        out = (max(means), min(means)) if self.maximize else (min(means), max(means))
        self._memo["extremes", split] = out
        return out


@dataclass(frozen=True)
class Arm:
    """A search strategy: its sampler (from the replay seed), its trial pruner and what the pruner reads.

    ``prune_from``: the first optimizer step at which the pruner is asked (the tool's ``prune_warmup:
    after_t_init``: the first evaluation after AdaLoRA's first rank pruning); None: from the first report.
    """

    name: str
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    pruner: Callable[[], optuna.pruners.BasePruner] = optuna.pruners.NopPruner
    pruning_metric: str | None = None
    prune_from: int | None = None
    enqueue: Callable[[Table], list[Params]] = lambda table: []  # warm start: configurations asked first


@dataclass(frozen=True)
class Query:
    """One trial of a replay: what was asked, which run answered, what it cost."""

    number: int
    params: Params  # the table configuration (snapped)
    seed: str  # the training seed whose run answered
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None  # final validation metric (COMPLETE only)
    steps: int  # optimizer steps used
    seconds: float  # wall seconds used (prorated)
    warm: bool = False  # asked as part of a warm start


@dataclass
class Replay:
    """A replayed search: its queries in order, and what it would have chosen after the first n."""

    table: Table
    queries: list[Query] = field(default_factory=list)
    substituted: int = 0  # suggestions outside a partial table, answered by the nearest configuration in it

    def chosen(self, n: int | None = None) -> Params | None:
        """The best complete query's configuration among the first ``n`` (the earlier one on ties)."""
        best = None
        for q in self.queries[:n]:
            if q.state != "COMPLETE":
                continue
            if best is None or (q.value > best.value if self.table.maximize else q.value < best.value):
                best = q
        return best.params if best else None

    def cost(self, n: int | None = None) -> tuple[int, float]:
        """Optimizer steps and seconds spent by the first ``n`` queries."""
        qs = self.queries[:n]
        return sum(q.steps for q in qs), sum(q.seconds for q in qs)


def distributions(space: dict[str, list[Any]], numeric: Literal["snap", "categorical"]) -> dict[str, BaseDistribution]:
    """What the sampler is offered for each knob (see the module docstring)."""
    out: dict[str, BaseDistribution] = {}
    for knob, choices in space.items():
        numbers = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        if numeric == "snap" and numbers and len(choices) >= 3:
            low, high = float(min(choices)), float(max(choices))
            out[knob] = FloatDistribution(low, high, log=low > 0 and high / low > 3)
        else:
            out[knob] = CategoricalDistribution(choices)
    return out


def snap(value: Any, choices: list[Any], dist: BaseDistribution) -> Any:
    """The choice nearest ``value`` (in log scale for a log range)."""
    if isinstance(dist, CategoricalDistribution):
        return value
    scale = math.log if dist.log else float
    return min(choices, key=lambda c: abs(scale(c) - scale(value)))


def _report_value(point: dict[str, float], metric: str, maximize: bool, objective_metric: str) -> float | None:
    """The value a pruner sees: the tool's convention (search/objective.py) negates a metric that is better
    the other way than the study's direction (eval_loss for an accuracy study)."""
    value = point.get(metric)
    if value is None:
        return None
    lower_better = metric in ("eval_loss", "perplexity")
    return -value if lower_better == maximize and metric != objective_metric else value


def replay(
    table: Table,
    arm: Arm,
    seed: int,
    n_trials: int,
    numeric: Literal["snap", "categorical"] = "snap",
) -> Replay:
    """Run ``arm`` against ``table`` for ``n_trials`` trials (ask/tell on an in-memory study).

    A suggestion whose configuration is not in the table (a partial table) is answered by the nearest
    configuration that is (``Table.nearest``), and counted in ``Replay.substituted``; a complete table never
    substitutes.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    direction = "maximize" if table.maximize else "minimize"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # QMC's and GP's experimental-feature warnings
        study = optuna.create_study(direction=direction, sampler=arm.sampler(seed), pruner=arm.pruner())
    dists = distributions(table.space, numeric)
    draws = np.random.default_rng(seed).integers(0, 2**31, size=n_trials)
    out = Replay(table)
    for params in arm.enqueue(table):
        study.enqueue_trial(params)
    n_warm = len(study.get_trials(states=(TrialState.WAITING,)))
    for number in range(n_trials):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature and fixed-parameter warnings
            trial = study.ask(dists)
        config = {k: snap(v, table.space[k], dists[k]) for k, v in trial.params.items()}
        if config_key(config) not in table.runs:
            config, out.substituted = table.nearest(config), out.substituted + 1
        runs = table.runs[config_key(config)]
        ids = sorted(runs, key=int)
        run_seed = ids[int(draws[number]) % len(ids)]
        out.queries.append(_query(study, trial, table, arm, number, runs[run_seed], config, run_seed, number < n_warm))
    return out


def _query(
    study: optuna.Study,
    trial: optuna.Trial,
    table: Table,
    arm: Arm,
    number: int,
    run: dict,
    config: Params,
    run_seed: str,
    warm: bool,
) -> Query:
    """Report the run's curve to the pruner, tell the trial's end state, and count what it cost."""
    total = max(run.get("steps") or 1, 1)
    seconds = float(run.get("wall_s") or 0.0)
    if run["state"] != "COMPLETE":
        study.tell(trial, state=TrialState.FAIL)
        return Query(number, config, run_seed, "FAIL", None, run.get("steps") or 0, seconds, warm)
    metric = arm.pruning_metric or table.metric
    for point in run["curve"]:
        value = _report_value(point, metric, table.maximize, table.metric)
        if value is None or point["step"] >= total:
            continue
        trial.report(value, point["step"])
        if (arm.prune_from is None or point["step"] >= arm.prune_from) and trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            used = point["step"]
            return Query(number, config, run_seed, "PRUNED", None, used, seconds * used / total, warm)
    value = run["validation"][table.metric]
    study.tell(trial, value)
    return Query(number, config, run_seed, "COMPLETE", value, total, seconds, warm)

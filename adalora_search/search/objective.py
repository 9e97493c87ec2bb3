"""The Optuna objective: trial -> TrialConfig -> engine run -> report/should_prune -> user attrs.

Whatever happens (complete, trial-pruned, failed), the run's results are written to the trial's
user attrs before the trial ends: ``metrics``, ``rank_allocation``, ``budget_curve``,
``trainable_params``, ``timing`` and, for a failed trial, ``failure``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

from adalora_search import files
from adalora_search.errors import TrialFailure
from adalora_search.search import artifacts
from adalora_search.search.tracking import Tracker, TrialTracking
from adalora_search.study.space import TrialConfig, trial_config
from adalora_search.study.spec import StudySpec
from adalora_search.tasks import Task
from adalora_search.train import distributed, modeling
from adalora_search.train.data import TokenizedData
from adalora_search.train.distributed import Ranks
from adalora_search.train.engine import TrialRun
from adalora_search.train.methods import METHODS

_log = logging.getLogger(__name__)

# exceptions a single trial may raise without stopping the study (anything else is a bug)
TRIAL_ERRORS: tuple[type[BaseException], ...] = (
    TrialFailure,
    RuntimeError,
    ValueError,
    MemoryError,
    ArithmeticError,
    IndexError,
    KeyError,
)
Log = Callable[[str], None]


def pruning_value(spec: StudySpec, task: Task) -> tuple[str, float]:
    """The metric reported to the trial pruner at each evaluation and its sign (+1 or -1).

    ``study.pruning_metric``, else the first objective's metric. Optuna's pruners compare intermediate
    values in the study's direction (``optuna.pruners``), so a metric that is better the other way
    (``eval_loss`` in a study that maximises accuracy) is reported negated.
    """
    objective = spec.study.objectives[0]
    metric = spec.study.pruning_metric or objective.metric
    same_way = metric == objective.metric or task.direction(metric) == objective.resolved_direction
    return metric, 1.0 if same_way else -1.0


class Objective:
    """Callable objective; also usable directly with ``study.optimize`` for a single process."""

    def __init__(
        self,
        spec: StudySpec,
        data: TokenizedData,
        artifact_store: str | Path | None = None,
        log: Log = _log.info,
        processes: int = 1,
    ):
        self.spec = spec
        self.processes = processes  # processes per trial (``--gpus-per-trial``; train/distributed.py)
        self.data = data
        self.artifact_store = str(artifact_store) if artifact_store is not None else None
        self.log = log
        self.on_progress: Callable[[int, int, int], None] | None = None  # (trial number, step, total steps)
        self.tracker = Tracker(spec.tracking, spec.study.name)  # UserError now if a tracker is not installed
        if spec.study.keep_top_k_adapters and self.artifact_store:  # a store that cannot work: exit 2 before trial 0
            artifacts.open_store(self.artifact_store, create=True)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        cfg = trial_config(self.spec, trial, trial.user_attrs.get("baseline"))
        trial.set_user_attr("config", cfg.model_dump(mode="json"))  # export/retrain rebuild from this
        run: TrialRun | None = None
        started = time.perf_counter()
        tracked = self.tracker.start(trial, cfg)
        try:
            with self._group(cfg) as parallel:
                run = TrialRun(cfg, self.data, parallel)
                trial.set_user_attr("total_steps", run.total_steps)  # status shows a running trial's progress
                trial.set_user_attr("trainable_params", dict(run.result.trainable_params))
                run.train(self._on_eval(trial, cfg, run, tracked))
            if "test" in self.data.splits:
                run.result.metrics["test"] = run.evaluate("test", final=True)
            kept = self._keep_adapter(trial, run)
            self._warn(trial, run, [] if kept is None else [kept])
            return self._values(run)
        except TRIAL_ERRORS as exc:
            trial.set_user_attr("failure", {"type": type(exc).__name__, "message": str(exc)[:2000]})
            raise
        finally:
            self._write_attrs(trial, run, time.perf_counter() - started)
            tracked.finish(run.result if run is not None else None, sys.exc_info()[1])

    def _group(self, cfg: TrialConfig) -> contextlib.AbstractContextManager[Ranks | None]:
        """This process as rank 0 of the trial's processes (the others started here), or alone (None)."""
        if self.processes == 1:
            return contextlib.nullcontext()
        cuda = cfg.training.device != "cpu" and torch.cuda.is_available()
        return distributed.group(cfg, self.processes, cuda)

    def _on_eval(
        self, trial: optuna.Trial, cfg: TrialConfig, run: TrialRun, tracked: TrialTracking
    ) -> Callable[[int, dict], None]:
        objectives = self.spec.study.objectives
        metric = objectives[0].metric
        pruning, sign = pruning_value(self.spec, run.task)
        warmup = 0
        if self.spec.study.prune_warmup == "after_t_init" and METHODS[cfg.method].rank_pruning:
            warmup = modeling.schedule_steps(cfg.adalora.schedule, run.total_steps)[0]

        def on_eval(step: int, scores: dict[str, float]) -> None:
            if self.on_progress is not None:
                self.on_progress(trial.number, step, run.total_steps)
            shown = metric if metric in scores else run.task.main_metric  # e.g. exact_match comes after training
            self.log(
                f"[trial {trial.number}] step {step}/{run.total_steps} train_loss {scores['train_loss']:.4f} "
                f"{shown} {scores.get(shown, float('nan')):.4f} budget {scores['budget']}"
            )
            tracked.log(step, scores)
            trial.set_user_attr("last_eval_step", step)
            trial.set_user_attr("trainable_params", dict(run.result.trainable_params))  # after rank pruning so far
            if len(objectives) > 1 or pruning not in scores:
                return
            trial.report(sign * scores[pruning], step)
            if step > warmup and trial.should_prune():
                raise optuna.TrialPruned(f"trial pruned at step {step}: {pruning} {scores[pruning]:.4f}")

        return on_eval

    def _warn(self, trial: optuna.Trial, run: TrialRun, notes: list[str]) -> None:
        """Results a user can misread are stored and printed with the trial, never left silent."""
        final = run.result.metrics.get("final", {})
        chance = run.task.chance_note(final, self.data.splits["validation"], self.data.label_names) if final else None
        if chance is not None:
            notes.append(chance)
        if notes:
            trial.set_user_attr("warnings", notes)
            for note in notes:
                _log.warning(f"[trial {trial.number}] WARNING: {note}")

    def _values(self, run: TrialRun) -> float | list[float]:
        values = []
        for objective in self.spec.study.objectives:
            if objective.metric == "trainable_params":
                values.append(float(run.result.trainable_params["final"]))
            else:
                values.append(float(run.result.metrics["final"][objective.metric]))
        return values[0] if len(values) == 1 else values

    def _write_attrs(self, trial: optuna.Trial, run: TrialRun | None, seconds: float) -> None:
        attrs: dict[str, Any] = run.result.as_attrs() if run is not None else {"timing": {}}
        attrs["timing"]["wall_s"] = round(seconds, 3)
        attrs["label_names"] = self.data.label_names  # what its head's ids mean (export reads it, not the data)
        if run is not None:
            attrs["total_steps"] = run.total_steps
            attrs["method"] = run.cfg.method
            attrs["target_r"] = run.cfg.adalora.target_r
            attrs["init_r"] = run.cfg.adalora.init_r
        for key, value in attrs.items():
            trial.set_user_attr(key, json.loads(json.dumps(value)))

    def _keep_adapter(self, trial: optuna.Trial, run: TrialRun) -> str | None:
        """Upload this adapter to the artifact store if it is among the top-k; remove those it pushes out.

        A side effect: when it fails (a full disk, an unreachable bucket) the trained result is kept and the
        failure is returned as a warning (also in the user attr ``adapter_failure``), never raised.
        """
        k = self.spec.study.keep_top_k_adapters
        if not k or self.artifact_store is None or len(self.spec.study.objectives) > 1:  # Pareto: no top-k
            return None
        value = self._values(run)
        assert isinstance(value, float)
        try:
            artifacts.keep_adapter(trial, run.save_adapter, value, k, self.artifact_store)
        except Exception as exc:  # noqa: BLE001 - any failure of the upload leaves the trained trial COMPLETE
            reason = files.reason(exc)
            trial.set_user_attr("adapter_failure", reason)
            return (
                f"its adapter could not be kept in the artifact store {self.artifact_store} ({reason}); the "
                "trial's results are stored, but export has no adapter/ for it"
            )
        return None

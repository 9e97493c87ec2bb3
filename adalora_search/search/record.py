"""What a trial and a study leave in the study storage, read back as typed records.

``objective.py`` writes a trial's user attrs when it ends (in any state); ``runner.py`` and
``results/references.py`` write the study's. Every reader of results (status, report, export,
references, the runner's failure check, the API) reads them through ``TrialRecord.of`` and
``StudyRecord.of``: an attr that is missing (a trial that failed early, a study from an older
version) reads as empty here, once. Bookkeeping attrs (``fingerprint``, ``baselines_enqueued``) are
read only by the module that writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

T = TypeVar("T")


def _stored(attrs: Mapping[str, Any], key: str, empty: Callable[[], T]) -> T:
    """``attrs[key]``, or ``empty()`` when it is missing or null (the one place a missing attr is defaulted)."""
    value = attrs[key] if key in attrs else None
    return empty() if value is None else value


def _scores(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The splits that were scored: "final" / "best" / "test" -> metric -> value (null or empty ones left out)."""
    return {which: dict(scores) for which, scores in metrics.items() if scores}


@dataclass(frozen=True)
class TrialRecord:
    """One trial's stored results; missing attrs (a trial that failed early) read as empty."""

    number: int
    state: TrialState
    values: list[float] | None
    params: dict[str, Any]
    config: dict[str, Any] | None  # TrialConfig.model_dump(mode="json"): export and retrain rebuild from it
    metrics: dict[str, dict[str, float]]  # "final" / "best" (validation) and "test" -> metric -> value
    rank_allocation: dict[str, int]  # adapted module -> final rank
    budget_curve: list[list[int]]  # [[optimizer step, total rank], ...]
    history: list[dict[str, float]]  # every validation pass: step, the task's metrics, train_loss, budget
    trainable_params: dict[str, int]  # initial, final (after rank pruning), model_total
    timing: dict[str, Any]  # seconds, tokens/s, peak memory, device, steps
    total_steps: int | None
    baseline: str | None = None
    failure: dict[str, str] | None = None  # type, message
    warnings: list[str] = field(default_factory=list)
    adapter_store: str | None = None  # the artifact store its kept adapter was uploaded to (search/artifacts.py)
    adapter_failure: str | None = None  # why its adapter could not be kept (the trial itself is complete)
    dropped_adapters: list[int] = field(default_factory=list)  # trials whose adapters it pushed out of the top-k
    adapter_dir: str | None = None  # studies from before artifact stores: a local directory
    worker: str | None = None
    last_eval_step: int | None = None  # a running trial: the optimizer step of its last evaluation
    label_names: list[str] | None = None  # class or tag names in id order, as the trial trained them
    has_label_names: bool = False  # label_names was stored (studies from before it was are read from the data)
    warm_start: str | None = None  # enqueued by study.warm_start: where from ("portfolio #2", "<study> trial 7")

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        a = trial.user_attrs
        return cls(
            number=trial.number,
            state=trial.state,
            values=trial.values,
            params=dict(trial.params),
            config=a.get("config"),
            metrics=_scores(_stored(a, "metrics", dict)),
            rank_allocation=dict(_stored(a, "rank_allocation", dict)),
            budget_curve=list(_stored(a, "budget_curve", list)),
            history=list(_stored(a, "history", list)),
            trainable_params=dict(_stored(a, "trainable_params", dict)),
            timing=dict(_stored(a, "timing", dict)),
            total_steps=a.get("total_steps"),
            baseline=a.get("baseline"),
            failure=a.get("failure"),
            warnings=list(_stored(a, "warnings", list)),
            adapter_store=a.get("adapter_store"),
            adapter_failure=a.get("adapter_failure"),
            dropped_adapters=list(_stored(a, "dropped_adapters", list)),
            adapter_dir=a.get("adapter_dir"),
            worker=a.get("worker"),
            last_eval_step=a.get("last_eval_step"),
            label_names=a.get("label_names"),
            has_label_names="label_names" in a,
            warm_start=a.get("warm_start"),
        )

    def metric(self, which: str, name: str) -> float | None:
        """``which`` ("final", "best", "test") value of metric ``name``, or None."""
        return self.metrics.get(which, {}).get(name)

    @property
    def steps(self) -> int | None:
        """Optimizer steps actually trained (fewer than ``total_steps`` for a trial-pruned trial; a running
        trial: at its last evaluation).
        """
        return self.timing.get("steps", self.last_eval_step)

    @property
    def total_rank(self) -> int:
        return sum(self.rank_allocation.values())


@dataclass(frozen=True)
class TriedRate:
    """One learning rate a reference run tried: its final validation main metric (None if it failed)."""

    learning_rate: float | None
    validation: float | None = None
    failure: str | None = None


@dataclass(frozen=True)
class ReferenceResult:
    """A reference run beside the search (``results/references.py``), stored in the study attr ``references``.

    ``metrics``: "final" (validation) and "test" -> metric -> value; ``tried``: every learning rate
    trained, the kept one chosen on validation; ``of_trial``: the trial whose settings it used;
    ``failure``: why the kept run failed (every rate diverged); ``rank_allocation``: a LoRA variant's rank per
    module (EVA's, after its redistribution), the layout of a trial's ``rank_allocation``.
    """

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    trainable_params: dict[str, int] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    learning_rate: float | None = None
    warnings: list[str] = field(default_factory=list)
    tried: list[TriedRate] = field(default_factory=list)
    of_trial: int | None = None
    failure: str | None = None
    rank_allocation: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, stored: Mapping[str, Any]) -> ReferenceResult:
        return cls(
            metrics=_scores(_stored(stored, "metrics", dict)),
            trainable_params=dict(_stored(stored, "trainable_params", dict)),
            timing=dict(_stored(stored, "timing", dict)),
            learning_rate=stored.get("learning_rate"),
            warnings=list(_stored(stored, "warnings", list)),
            tried=[TriedRate(**t) for t in _stored(stored, "tried", list)],
            of_trial=stored.get("of_trial"),
            failure=stored.get("failure"),
            rank_allocation=dict(_stored(stored, "rank_allocation", dict)),
        )

    def as_attr(self) -> dict[str, Any]:
        """The JSON object stored in the study attr (``of`` reads it back), in the shape the study attr has
        always had: a failed run stores only ``failure``, ``learning_rate``, ``tried`` and ``of_trial``; a
        trained one has no ``failure`` key (readers of ``status --json`` tell them apart by the keys).
        """
        out = asdict(self)
        kept = ("failure", "learning_rate", "tried", "of_trial") if self.failure is not None else tuple(out)
        empty = {"failure": None, "of_trial": None, "rank_allocation": {}}  # left out when they hold nothing
        return {k: v for k, v in out.items() if k in kept and not (k in empty and v == empty[k])}

    def metric(self, which: str, name: str) -> float | None:
        """``which`` ("final", "test") value of metric ``name``, or None."""
        return self.metrics.get(which, {}).get(name)

    @property
    def trained(self) -> bool:
        """It has validation scores (not a failed run)."""
        return bool(self.metrics)


@dataclass(frozen=True)
class StudyRecord:
    """A study's own stored attrs (what ``run`` recorded about the whole study), typed."""

    task: str  # model.task
    objectives: list[dict[str, str]]  # [{metric, direction}, ...] as resolved when the study was created
    references: dict[str, ReferenceResult]  # kind -> the kept run
    references_planned: list[str] | None  # kinds the study file names (None: a study from before it was kept)
    data_notes: list[str]  # what loading did to the rows
    budget: dict[str, Any]  # the last run's n_trials / timeout
    fingerprint_sections: dict[str, Any]  # section -> its readable copy (search/fingerprint.py)
    intermediate_values: str | None  # the metric reported to the trial pruner, "-eval_loss" when negated
    reference_running: dict[str, Any] | None = None  # the reference run in training: {kind, since (epoch s)}
    split_sizes: dict[str, int] = field(default_factory=dict)  # rows (QA: windows) per split, as trained
    trivial: dict[str, Any] | None = None  # the task's trivial predictor: label, validation / test scores, shares

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        a = study.user_attrs
        return cls(
            task=_stored(a, "task", lambda: "classification"),
            objectives=list(_stored(a, "objectives", list)),
            references={k: ReferenceResult.of(v) for k, v in _stored(a, "references", dict).items()},
            references_planned=a.get("references_planned"),
            data_notes=list(_stored(a, "data_notes", list)),
            budget=dict(_stored(a, "budget", dict)),
            fingerprint_sections=dict(_stored(a, "fingerprint_sections", dict)),
            intermediate_values=a.get("intermediate_values"),
            reference_running=a.get("reference_running"),
            split_sizes=dict(_stored(a, "split_sizes", dict)),
            trivial=a.get("trivial"),
        )

    def objective_metrics(self, default: str) -> list[str]:
        """The objectives' metrics, first first; ``[default]`` for a study that stored none."""
        return [o["metric"] for o in self.objectives] or [default]

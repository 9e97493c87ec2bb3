"""What a trial leaves in the study storage, read back as one typed record.

``objective.py`` writes these user attrs when a trial ends (in any state); every reader (status,
report, export, references, the runner's failure check) reads them through ``TrialRecord.of``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState


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

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        a = trial.user_attrs
        return cls(
            number=trial.number, state=trial.state, values=trial.values, params=dict(trial.params),
            config=a.get("config"), metrics={k: v for k, v in (a.get("metrics") or {}).items() if v},
            rank_allocation=dict(a.get("rank_allocation") or {}), budget_curve=list(a.get("budget_curve") or []),
            history=list(a.get("history") or []),
            trainable_params=dict(a.get("trainable_params") or {}), timing=dict(a.get("timing") or {}),
            total_steps=a.get("total_steps"), baseline=a.get("baseline"), failure=a.get("failure"),
            warnings=list(a.get("warnings") or []), adapter_store=a.get("adapter_store"),
            adapter_failure=a.get("adapter_failure"),
            dropped_adapters=list(a.get("dropped_adapters") or []), adapter_dir=a.get("adapter_dir"),
            worker=a.get("worker"), last_eval_step=a.get("last_eval_step"), label_names=a.get("label_names"),
            has_label_names="label_names" in a,
        )

    def metric(self, which: str, name: str) -> float | None:
        """``which`` ("final", "best", "test") value of metric ``name``, or None."""
        return (self.metrics.get(which) or {}).get(name)

    @property
    def steps(self) -> int | None:
        """Optimizer steps actually trained (fewer than ``total_steps`` for a trial-pruned trial; a running
        trial: at its last evaluation).
        """
        return self.timing.get("steps", self.last_eval_step)

    @property
    def total_rank(self) -> int:
        return sum(self.rank_allocation.values())

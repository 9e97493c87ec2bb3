"""The study file's ``study`` section: name, storage, objectives, sampler, trial pruner, trial budget,
kept adapters and reference runs (the runner's sub-spec; see spec.py for the whole file).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from adalora_search.study.frozen import Frozen
from adalora_search.study.samplers import PrunerSpec, SamplerSpec
from adalora_search.tasks import TASKS

# which way each metric is better, from the task registry (each task's `metrics`): an objective's
# direction defaults from it
METRIC_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    **{metric: direction for task in TASKS.values() for metric, direction in task.metrics.items()},
    "trainable_params": "minimize",
}


# every task's validation metrics, from the registry (tasks/: each task's `metrics`; rules.py checks the task has it)
TaskMetric = Literal[tuple(m for m in METRIC_DIRECTIONS if m != "trainable_params")]  # type: ignore[valid-type]


class Objective(Frozen):
    """One optimisation target; ``trainable_params`` makes a budget-vs-quality Pareto search."""

    metric: Literal[TaskMetric, "trainable_params"] = Field(
        description="a metric of the task on the validation split, or trainable_params (after rank pruning)"
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None,
        description="maximize or minimize the metric (default: minimize for eval_loss, perplexity, "
        "trainable_params; else maximize)",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_direction(cls, data: Any) -> Any:
        """Fill a missing direction from the metric, so every reader sees the resolved one."""
        if isinstance(data, dict) and data.get("direction") is None and data.get("metric") in METRIC_DIRECTIONS:
            return {**data, "direction": METRIC_DIRECTIONS[data["metric"]]}
        return data

    @property
    def resolved_direction(self) -> Literal["maximize", "minimize"]:
        """The direction written in the file, else the metric's natural one (METRIC_DIRECTIONS)."""
        return self.direction or METRIC_DIRECTIONS[self.metric]


# plain LoRA often diverges at the learning rate AdaLoRA did well with, so its rate is chosen on
# validation from these: the default of a `lora` reference and of `adalora-search retrain`
LORA_LEARNING_RATES: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)


# references trained as fixed-rank LoRA at the best trial's final budget (PEFT's LoraConfig), by variant
LORA_KINDS = ("lora", "pissa", "dora", "eva")


class Reference(Frozen):
    """A non-AdaLoRA run beside the search, trained with the best trial's settings unless overridden.

    ``lora``: uniform rank over the best trial's target modules, at its final rank budget; ``pissa``,
    ``dora`` and ``eva``: the same budget with PEFT's SVD-based LoRA variants (PiSSA's principal singular
    vectors as initialisation, DoRA's magnitude/direction split, EVA's initialisation from the SVD of
    activations on training batches, which also moves ranks between matrices, up to 2x, ``rho`` 2);
    ``full``: every weight trainable (usually wants a lower learning rate);
    ``zero_shot``: the base model evaluated with no adapter and no training.
    """

    kind: Literal["lora", "pissa", "dora", "eva", "full", "zero_shot"] = Field(
        description="lora: uniform rank at the best trial's final budget; pissa, dora, eva: PEFT's SVD-based "
        "LoRA variants at that budget; full: every weight; zero_shot: no training"
    )
    learning_rate: float | list[float] | None = Field(
        default=None,
        description="one rate, or several: each is trained, the best on validation is kept; "
        f"default: lora, pissa, dora, eva {list(LORA_LEARNING_RATES)}, full the best trial's",
    )
    epochs: float | None = Field(
        default=None, gt=0, description="passes over the training rows (default: as the trials)"
    )

    @field_validator("learning_rate")
    @classmethod
    def _positive(cls, value: float | list[float] | None) -> float | list[float] | None:
        rates = value if isinstance(value, list) else [value] if value is not None else []
        if any(r <= 0 for r in rates) or (isinstance(value, list) and not value):
            raise ValueError(f"learning rates must be > 0 and at least one, but got {value}")
        return value

    @property
    def learning_rates(self) -> list[float | None]:
        """The rates to train, in order (None: the best trial's own rate; zero-shot trains nothing)."""
        if self.kind == "zero_shot":
            return [None]
        if self.learning_rate is None:
            return list(LORA_LEARNING_RATES) if self.kind in LORA_KINDS else [None]
        return list(self.learning_rate) if isinstance(self.learning_rate, list) else [self.learning_rate]


class WarmStartFrom(Frozen):
    """Start from an earlier study: its best ``top_k`` configurations are this study's first trials."""

    model_config = ConfigDict(**Frozen.model_config, populate_by_name=True)  # `from` in YAML, `source` in Python

    source: str = Field(
        alias="from",
        min_length=1,
        description="an earlier study's file (relative to this file), or its storage URL (then name `study`)",
    )
    study: str | None = Field(default=None, min_length=1, description="the study name in that storage")
    top_k: int = Field(default=4, ge=1, description="how many of its best completed trials to start from")


class StudySection(Frozen):
    """``study``: name, storage, objectives, sampler, trial pruner and the budget of trials."""

    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="the Optuna study name (letters, digits, _ . -); names the artifacts directory too",
    )
    storage: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite file beside the study file")
    objective: Objective | list[Objective] = Field(
        default=Objective(metric="accuracy"), description="one objective, or a list for a Pareto search"
    )
    n_trials: int | None = Field(
        default=None,
        ge=1,
        description="finished (complete + trial-pruned) trials for "
        "the whole study, over all workers and resumes (default: none, until timeout)",
    )
    timeout: float | None = Field(default=None, gt=0, description="seconds a run goes on (default: none)")
    sampler: SamplerSpec = Field(
        default_factory=lambda: SamplerSpec.default(), description="the Optuna sampler, chosen by type (default: tpe)"
    )
    pruner: PrunerSpec = Field(
        default_factory=lambda: PrunerSpec.default(),
        description="the trial pruner, chosen by type (default: none, every trial runs to its end: BENCHMARKS.md §3)",
    )
    pruning_metric: TaskMetric | None = Field(
        default=None,
        description="the validation metric the trial pruner reads at each evaluation (default: the "
        "objective's); e.g. the smoother eval_loss while selecting on accuracy. Optuna's pruners compare in the "
        "study's direction, so a metric whose better direction is the other one is reported negated",
    )
    prune_warmup: Literal["after_t_init", "none"] = Field(
        default="after_t_init",
        description="after_t_init: no trial pruning before AdaLoRA's first rank allocation; "
        "none: the trial pruner may stop a trial at any evaluation",
    )
    heartbeat_interval: int = Field(default=30, ge=1, description="seconds between worker heartbeats")
    max_retry: int = Field(default=2, ge=0, description="re-runs of a trial whose worker died")
    max_consecutive_failures: int = Field(
        default=3, ge=1, description="stop the study after this many failed trials in a row (fix the cause first)"
    )
    keep_top_k_adapters: int = Field(
        default=1,
        ge=0,
        description="keep the trained adapters of the k best trials in the artifact store (export "
        "brings the kept one of the trial it exports); 0: keep none. A multi-objective study keeps none",
    )
    artifact_store: str | None = Field(
        default=None,
        min_length=1,
        description="Optuna artifact store of the kept adapters: a directory (relative "
        "to the study file) or s3://BUCKET (needs boto3); default <study file dir>/<name>_artifacts",
    )
    references: list[Reference] = Field(
        default_factory=list,
        description="reference runs after the search: uniform LoRA (lora), full fine-tuning "
        "(full), the base model with no adapter (zero_shot)",
    )

    warm_start: Literal["portfolio"] | WarmStartFrom | None = Field(
        default=None,
        description="configurations run as the first trials, before the sampler's own: portfolio (a few shipped "
        "with the tool, chosen on its benchmark tables) or {from: EARLIER_STUDY_FILE, top_k: K} (the best K of an "
        "earlier study, on another task or model); a knob the earlier study fixed or left outside this space is "
        "sampled as usual. Default: none",
    )

    @model_validator(mode="after")
    def _warm_start_with_a_sampler(self) -> StudySection:
        if self.warm_start is not None and self.sampler.root.type == "grid":
            raise ValueError(
                "study.warm_start: a grid study runs every point of its grid anyway; remove warm_start, or use "
                "another sampler"
            )
        return self

    @property
    def objectives(self) -> list[Objective]:
        return self.objective if isinstance(self.objective, list) else [self.objective]

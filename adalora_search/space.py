"""The search space: spec knobs -> ``trial.suggest_*`` -> a fully fixed ``TrialConfig``.

Parameter names in Optuna are the knob paths of the study file (``adalora.init_r``), so the
dashboard, the report and a baseline's ``params`` all speak the same language.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Literal

import optuna
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from adalora_search.distributions import Choices, FloatRange, IntRange, encode_choice, is_searched, suggest
from adalora_search.spec import DataSpec, Frozen, GenerationSpec, ModelSpec, StudySpec, TrainingSpec

KNOBS: tuple[str, ...] = (
    "training.learning_rate",
    "training.weight_decay",
    "adalora.target_modules",
    "adalora.init_r",
    "adalora.target_r",
    "adalora.lora_alpha",
    "adalora.lora_dropout",
    "adalora.schedule.t_init",
    "adalora.schedule.t_final",
    "adalora.schedule.delta_t",
    "adalora.beta1",
    "adalora.beta2",
    "adalora.orth_reg_weight",
)


class TrainConfig(Frozen):
    """Training settings with every value fixed."""

    epochs: float | None
    max_steps: int | None
    batch_size: int
    eval_batch_size: int
    gradient_accumulation: int
    learning_rate: float = Field(gt=0)
    scheduler: Literal["linear", "cosine", "constant"]
    warmup_ratio: float
    weight_decay: float = Field(ge=0)
    max_grad_norm: float | None
    eval_every: int
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    num_threads: int | None
    gradient_checkpointing: bool = False
    generation: GenerationSpec = GenerationSpec()


class AdaLoraKnobs(Frozen):
    """AdaLoRA settings with every value fixed; t_init/t_final in ``schedule_unit``."""

    target_modules: list[str] = Field(min_length=1)
    init_r: int = Field(ge=1)
    target_r: int = Field(ge=1)
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(ge=0, lt=1)
    schedule_unit: Literal["fraction", "steps"]
    t_init: float = Field(ge=0)
    t_final: float = Field(ge=0)
    delta_t: int = Field(ge=1)
    beta1: float = Field(gt=0, lt=1)
    beta2: float = Field(gt=0, lt=1)
    orth_reg_weight: float = Field(ge=0)

    @model_validator(mode="after")
    def _ranks(self) -> "AdaLoraKnobs":
        if self.target_r >= self.init_r:  # PEFT's allocator would crash in kthvalue
            raise ValueError(f"target_r must be < init_r, but got target_r={self.target_r}, init_r={self.init_r}")
        return self


class LoraKnobs(Frozen):
    """Fixed-rank LoRA (exported allocation or a uniform-rank reference); alpha per module."""

    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]


class TrialConfig(Frozen):
    """Everything one training run needs; what the engine takes."""

    method: Literal["adalora", "lora", "full", "none"] = "adalora"  # none: the base model, untrained
    model: ModelSpec
    data: DataSpec
    training: TrainConfig
    adalora: AdaLoraKnobs
    lora: LoraKnobs | None = None


def optimizer_steps(training: TrainingSpec | TrainConfig, n_train: int) -> int:
    """Optimizer steps of a run: max_steps, else epochs x ceil(batches / accumulation)."""
    if training.max_steps is not None:
        return training.max_steps
    batches = math.ceil(n_train / training.batch_size)
    return max(1, int(round((training.epochs or 1) * math.ceil(batches / training.gradient_accumulation))))


def knob(spec: StudySpec, path: str) -> Any:
    """The spec value (fixed or distribution) at a knob path."""
    node: Any = spec
    for part in path.split("."):
        node = getattr(node, part)
    return node


def searched_knobs(spec: StudySpec) -> Iterator[tuple[str, Any]]:
    """(path, distribution) for every knob the sampler will vary."""
    for path in KNOBS:
        value = knob(spec, path)
        if is_searched(value):
            yield path, value


def sample(spec: StudySpec, trial: optuna.Trial, overrides: dict[str, Any] | None = None) -> TrialConfig:
    """Turn a trial (real, enqueued or ``FixedTrial``) into a concrete config.

    ``overrides`` (a baseline's params) replace knobs that are fixed in the spec; searched knobs
    of a baseline arrive through ``enqueue_trial`` so the sampler learns from them.
    """
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for path in KNOBS:
        spec_value = knob(spec, path)
        if path in overrides and not is_searched(spec_value):
            values[path] = overrides[path]
        else:
            values[path] = suggest(trial, path, spec_value)
    return build_config(spec, values)


def trial_config(spec: StudySpec, trial: optuna.Trial | optuna.trial.FrozenTrial | optuna.trial.FixedTrial,
                 baseline: str | None = None) -> TrialConfig:
    """The config of a trial, applying the named baseline's overrides of fixed knobs."""
    overrides = next((b.params for b in spec.baselines if b.name == baseline), {}) if baseline else {}
    return sample(spec, trial, overrides)


def build_config(spec: StudySpec, values: dict[str, Any]) -> TrialConfig:
    """Assemble a TrialConfig from the spec and one value per knob path."""
    training = _train_config(spec.training, values)
    schedule = spec.adalora.schedule
    adalora = AdaLoraKnobs(
        target_modules=list(values["adalora.target_modules"]),
        init_r=values["adalora.init_r"],
        target_r=values["adalora.target_r"],
        lora_alpha=values["adalora.lora_alpha"],
        lora_dropout=values["adalora.lora_dropout"],
        schedule_unit=schedule.unit,
        t_init=values["adalora.schedule.t_init"],
        t_final=values["adalora.schedule.t_final"],
        delta_t=values["adalora.schedule.delta_t"],
        beta1=values["adalora.beta1"],
        beta2=values["adalora.beta2"],
        orth_reg_weight=values["adalora.orth_reg_weight"],
    )
    return TrialConfig(model=spec.model, data=spec.data, training=training, adalora=adalora)


def _train_config(training: TrainingSpec, values: dict[str, Any]) -> TrainConfig:
    fields = training.model_dump(exclude={"learning_rate", "weight_decay"})
    return TrainConfig(**fields, learning_rate=values["training.learning_rate"],
                       weight_decay=values["training.weight_decay"])


def knob_value_type(path: str) -> Any:
    """The Python type of one value of a knob (float, int, or list[str] for target modules)."""
    model = TrainConfig if path.startswith("training.") else AdaLoraKnobs
    return model.model_fields[path.rsplit(".", 1)[-1]].annotation


_TYPE_WORDS = {float: "a number, e.g. 1.0e-3", int: "a whole number, e.g. 8",
               list[str]: "a list of module names, e.g. [query, value] (or the comma-joined 'query,value')"}


def typed_value(path: str, value: Any) -> Any:
    """A baseline's value for a knob, as the knob's type; ``ValueError`` naming the fix otherwise.

    Target modules may be written comma-joined (``"query,value"``, the form validate and the
    report print); numbers must be numbers (a quoted ``"1e-3"`` is refused, not guessed).
    """
    kind = knob_value_type(path)
    if kind == list[str] and isinstance(value, (str, list)):  # "query,value" or [query, "key,value"]
        parts = [value] if isinstance(value, str) else value
        if all(isinstance(part, str) for part in parts):
            value = [name.strip() for part in parts for name in part.split(",") if name.strip()]
    try:
        return TypeAdapter(kind).validate_python(value, strict=True)
    except ValidationError:
        raise ValueError(f"must be {_TYPE_WORDS.get(kind, kind)}, but got {type(value).__name__} {value!r}") from None


def with_typed_baselines(spec: StudySpec) -> StudySpec:
    """The spec with every baseline value converted by ``typed_value`` (rules.check has vetted them)."""
    baselines = [b.model_copy(update={"params": {p: typed_value(p, v) if p in KNOBS else v
                                                 for p, v in b.params.items()}}) for b in spec.baselines]
    return spec.model_copy(update={"baselines": baselines})


def enqueue_params(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """A baseline's values for the searched knobs, encoded as Optuna stores them."""
    return {path: encode_choice(params[path]) for path, _ in searched_knobs(spec) if path in params}


def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The grid of a ``grid`` sampler: every searched knob must be a list of choices."""
    grid: dict[str, list[Any]] = {}
    for path, dist in searched_knobs(spec):
        assert isinstance(dist, Choices), "rules.check refuses ranges with the grid sampler"
        grid[path] = [encode_choice(c) for c in dist.choices]
    return grid


def knob_type(dist: Any) -> type:
    """The Python type a knob's values take (used to check baseline values)."""
    if isinstance(dist, FloatRange):
        return float
    if isinstance(dist, IntRange):
        return int
    if isinstance(dist, Choices):
        return type(dist.choices[0])
    return type(dist)

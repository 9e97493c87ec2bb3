"""The search space: the spec's knobs -> ``trial.suggest_*`` -> a ``TrialConfig`` that mirrors the spec.

A knob is a spec field declared with ``tunable(...)`` under ``training`` or ``adalora``; its path
in the study file (``adalora.schedule.delta_t``) is its Optuna parameter name and a baseline's key,
so the dashboard, the report and the study file speak the same language. A ``TrialConfig`` holds
the same ``TrainingSpec`` and ``AdaLoraSpec`` with every knob fixed: a field goes from the YAML to
the code that uses it (``modeling.adalora_config`` for PEFT) with nothing renamed in between.
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Iterator
from typing import Any, Literal

import optuna
from pydantic import TypeAdapter, ValidationError, model_validator

from adalora_search.study.distributions import (
    Choices,
    Knob,
    encode_choice,
    is_searched,
    knob_fields,
    suggest,
)
from adalora_search.study.spec import (
    KNOB_SECTIONS,
    AdaLoraSpec,
    DataSpec,
    Frozen,
    ModelSpec,
    StudySpec,
    TrainingSpec,
)

SECTIONS = tuple(KNOB_SECTIONS)

# knob path -> its marker (value type and rule), in the spec's field order (the order of suggest calls)
KNOB_FIELDS: dict[str, Knob] = {
    path: marker for section, model in KNOB_SECTIONS.items() for path, _, marker in knob_fields(model, f"{section}.")
}
KNOBS: tuple[str, ...] = tuple(KNOB_FIELDS)


class LoraKnobs(Frozen):
    """Fixed-rank LoRA (exported allocation or a uniform-rank reference); alpha per module."""

    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    init: Literal["default", "pissa", "eva"] = "default"  # PEFT's init_lora_weights (eva: from activations)
    use_dora: bool = False  # PEFT's DoRA


class TrialConfig(Frozen):
    """Everything one training run needs: the study's sections with every knob fixed."""

    method: Literal["adalora", "lora", "full", "none"] = "adalora"  # none: the base model, untrained
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec
    adalora: AdaLoraSpec
    lora: LoraKnobs | None = None

    @model_validator(mode="before")
    @classmethod
    def _stored_before_nesting(cls, data: Any) -> Any:
        """Configs stored before the schedule was nested (``schedule_unit``, ``t_init``... in adalora)."""
        adalora = data.get("adalora") if isinstance(data, dict) else None
        if isinstance(adalora, dict) and "schedule_unit" in adalora:
            flat = dict(adalora)
            schedule = {"unit": flat.pop("schedule_unit"), **{k: flat.pop(k) for k in ("t_init", "t_final", "delta_t")}}
            data = {**data, "adalora": {**flat, "schedule": schedule}}
        return data

    @model_validator(mode="after")
    def _fixed(self) -> TrialConfig:
        for path, _marker in KNOB_FIELDS.items():
            value = knob(self, path)
            if is_searched(value):
                raise ValueError(f"{path} must be a single value in a trial config, but got {value}")
            if (problem := knob_problem(path, value)) is not None:
                raise ValueError(f"{path} = {value!r}: {problem}")
        if (problem := rank_problem(self.adalora.target_r, self.adalora.init_r)) is not None:
            raise ValueError(problem)
        return self


def rank_problem(target_r: int, init_r: int, searched: bool = False) -> str | None:
    """Why ranks cannot be trained together, or None: ``target_r`` must be < ``init_r``.

    The one check of this rule: a trial config passes its two values, a search space (``searched``)
    the corners that come closest (the largest ``target_r``, the smallest ``init_r``). PEFT's rank
    allocator crashes in ``kthvalue`` when there is nothing to prune.
    """
    if target_r < init_r:
        return None
    if searched:
        return (
            f"target_r must be < init_r for every sample, but target_r can reach {target_r} while init_r can "
            f"be as low as {init_r}; lower target_r's high or raise init_r's low"
        )
    return f"target_r must be < init_r, but got target_r={target_r}, init_r={init_r}; lower target_r or raise init_r"


def optimizer_steps(training: TrainingSpec, n_train: int) -> int:
    """Optimizer steps of a run: max_steps, else epochs x ceil(batches / accumulation)."""
    if training.max_steps is not None:
        return training.max_steps
    batches = math.ceil(n_train / training.batch_size)
    return max(1, int(round((training.epochs or 1) * math.ceil(batches / training.gradient_accumulation))))


def knob(spec: StudySpec | TrialConfig, path: str) -> Any:
    """The value (fixed, or a distribution in a spec) at a knob path."""
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


def trial_config(
    spec: StudySpec,
    trial: optuna.Trial | optuna.trial.FrozenTrial | optuna.trial.FixedTrial,
    baseline: str | None = None,
) -> TrialConfig:
    """The config of a trial, applying the named baseline's overrides of fixed knobs."""
    overrides = next((b.params for b in spec.baselines if b.name == baseline), {}) if baseline else {}
    return sample(spec, trial, overrides)


def build_config(spec: StudySpec, values: dict[str, Any]) -> TrialConfig:
    """The spec's sections with each knob path replaced by its value (one value per path in KNOBS)."""
    sections = {name: getattr(spec, name).model_dump(mode="python") for name in SECTIONS}
    for path, value in values.items():
        section, *parts = path.split(".")
        node = sections[section]
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return TrialConfig(model=spec.model, data=spec.data, **sections)


def knob_problem(path: str, value: Any) -> str | None:
    """What is wrong with one value of a knob, checked against the knob's own constraints (spec.py)."""
    try:
        _value_adapter(path).validate_python(value)
    except ValidationError as exc:
        return KNOB_FIELDS[path].rule or exc.errors()[0]["msg"]
    return None


@functools.cache
def _value_adapter(path: str) -> TypeAdapter:
    """One validator per knob (every TrialConfig checks all of them)."""
    return TypeAdapter(KNOB_FIELDS[path].value_type)


def knob_value_type(path: str) -> Any:
    """The Python type of one value of a knob (float, int, or list[str] for target modules)."""
    value_type = KNOB_FIELDS[path].value_type
    return typing.get_args(value_type)[0] if typing.get_origin(value_type) is typing.Annotated else value_type


_TYPE_WORDS = {
    float: "a number, e.g. 1.0e-3",
    int: "a whole number, e.g. 8",
    list[str]: "a list of module names, e.g. [query, value] (or the comma-joined 'query,value')",
}


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
    baselines = [
        b.model_copy(update={"params": {p: typed_value(p, v) if p in KNOBS else v for p, v in b.params.items()}})
        for b in spec.baselines
    ]
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

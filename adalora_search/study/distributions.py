"""Search ranges for tunable knobs: a fixed value, a numeric range, or a list of choices.

A knob in the study file is written as one of::

    learning_rate: 1.0e-3                           # fixed
    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}   # range
    target_modules: {choices: [[query, value], [query, key, value]]}   # choices
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union

import optuna
from pydantic import BaseModel, Discriminator, Field, Tag, TypeAdapter, model_validator
from pydantic.fields import FieldInfo

from adalora_search.study.frozen import Frozen

T = TypeVar("T")


class FloatRange(Frozen):
    """A float range sampled with ``trial.suggest_float``."""

    low: float = Field(description="lowest value sampled (inclusive)")
    high: float = Field(description="highest value sampled (inclusive)")
    log: bool = Field(default=False, description="sample on a log scale (needs low > 0; not with step)")
    step: float | None = Field(default=None, gt=0, description="sample only low, low + step, ... (default: continuous)")

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        _check_range(self.low, self.high, self.log, self.step is not None)
        return self


class IntRange(Frozen):
    """An integer range sampled with ``trial.suggest_int``."""

    low: int = Field(description="lowest value sampled (inclusive)")
    high: int = Field(description="highest value sampled (inclusive)")
    log: bool = Field(default=False, description="sample on a log scale (needs low > 0; not with step)")
    step: int = Field(default=1, ge=1, description="sample only low, low + step, low + 2 step, ...")

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        _check_range(self.low, self.high, self.log, self.step != 1)
        return self


class Choices(Frozen, Generic[T]):
    """A categorical knob; each choice may itself be a list (e.g. a set of target modules)."""

    choices: list[T] = Field(min_length=1, description="the values the sampler picks from (a categorical knob)")


def _check_range(low: float, high: float, log: bool, stepped: bool) -> None:
    if low > high:
        raise ValueError(f"low must be <= high, but got low={low} and high={high}; swap them")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, but got low={low}; use a positive low or log: false")
    if log and stepped:
        raise ValueError("step cannot be combined with log: true; drop one of them")


def _kind(value: Any) -> str:
    """Which form a knob is in: from the YAML (a dict or not) or, when serialising, the model."""
    if isinstance(value, Choices) or (isinstance(value, dict) and "choices" in value):
        return "choices"
    if isinstance(value, (FloatRange, IntRange, dict)):
        return "range"
    return "fixed"


@dataclass(frozen=True)
class Knob:
    """Marks a spec field as a search knob; ``value_type`` is one value's type with its constraints.

    Every value a knob can take (a fixed value, each choice, both ends of a range) is checked
    against ``value_type`` before anything runs (rules.py), and ``rule`` is what the user is told.
    """

    value_type: Any
    rule: str = ""


def tunable(fixed: Any, range_type: type | None = None, rule: str = "", **constraints: Any) -> Any:
    """The pydantic type of a knob that is ``fixed``, a ``range_type`` range, or choices of ``fixed``.

    ``constraints`` (pydantic ``Field`` arguments: ``gt``, ``ge``, ``lt``, ``min_length``...) bound
    every value; ``rule`` says them in words, with the reason and an example.
    """
    members: list[Any] = [Annotated[fixed, Tag("fixed")], Annotated[Choices[fixed], Tag("choices")]]
    if range_type is not None:
        members.append(Annotated[range_type, Tag("range")])
    value_type = Annotated[fixed, Field(**constraints)] if constraints else fixed
    return Annotated[Union[tuple(members)], Discriminator(_kind), Knob(value_type, rule)]


def knob_of(field: Any) -> Knob | None:
    """The ``Knob`` marker of a pydantic field, or None when the field is not a knob."""
    return next((m for m in field.metadata if isinstance(m, Knob)), None)


def knob_fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, FieldInfo, Knob]]:
    """(knob path, field, marker) of every knob in ``model`` and its nested models, in field order."""
    for name, field in model.model_fields.items():
        marker = knob_of(field)
        if marker is not None:
            yield prefix + name, field, marker
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from knob_fields(field.annotation, f"{prefix}{name}.")


def fixed_values_schema(sections: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """JSON Schema of a baseline's ``params``: one property per knob path, typed as one value; nothing else.

    What ``space.typed_value`` accepts: a number where a number belongs, a whole number for ranks,
    a list of module names or the comma-joined ``"query,value"``; the knob's constraints hold too.
    """
    properties: dict[str, Any] = {}
    for section, model in sections.items():
        for path, field, marker in knob_fields(model, f"{section}."):
            value = TypeAdapter(marker.value_type).json_schema()
            if value.get("type") == "array":
                value = {"anyOf": [value, {"type": "string", "minLength": 1}]}
            properties[path] = {**value, "description": f"this baseline's value of {path}: {field.description}"}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def is_searched(knob: Any) -> bool:
    """True when the knob is a range or a set of choices (something Optuna samples)."""
    return isinstance(knob, (FloatRange, IntRange, Choices))


def corners(knob: Any) -> list[Any]:
    """The extreme values a knob can take; cross-field rules are checked on these."""
    if isinstance(knob, (FloatRange, IntRange)):
        return [knob.low, knob.high]
    if isinstance(knob, Choices):
        return list(knob.choices)
    return [knob]


def encode_choice(value: Any) -> Any:
    """Optuna categoricals hold scalars only; a list choice is stored as a comma-joined string."""
    return ",".join(map(str, value)) if isinstance(value, list) else value


def suggest(trial: optuna.Trial, name: str, knob: Any) -> Any:
    """Sample ``knob`` under ``name`` (fixed values are returned untouched, not recorded)."""
    if isinstance(knob, FloatRange):
        return trial.suggest_float(name, knob.low, knob.high, log=knob.log, step=knob.step)
    if isinstance(knob, IntRange):
        return trial.suggest_int(name, knob.low, knob.high, log=knob.log, step=knob.step)
    if isinstance(knob, Choices):
        encoded = [encode_choice(c) for c in knob.choices]
        picked = trial.suggest_categorical(name, encoded)
        return knob.choices[encoded.index(picked)]
    return knob


def describe(knob: Any) -> str:
    """A one-line, human description of a knob for ``validate``."""
    if isinstance(knob, (FloatRange, IntRange)):
        extra = " (log)" if knob.log else ""
        step = getattr(knob, "step", None)
        if step not in (None, 1):
            extra += f" step {step}"
        return f"[{knob.low}, {knob.high}]{extra}"
    if isinstance(knob, Choices):
        return "one of " + " | ".join(str(encode_choice(c)) for c in knob.choices)
    return f"{encode_choice(knob)} (fixed)"

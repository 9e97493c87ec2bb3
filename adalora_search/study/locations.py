"""Where a problem is in the study file: pydantic's errors as ``Problem``s with the field path, the value,
a message in words and the YAML line (``line_index``); problems found later placed at their line too.
"""

from __future__ import annotations

import difflib
import functools
import typing
from typing import Any

import yaml
from pydantic import BaseModel

from adalora_search.errors import Problem
from adalora_search.study.spec import StudySpec


def line_index(root: Any) -> dict[tuple[Any, ...], int]:
    """Map each key path of the YAML document to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                index[path + (key.value,)] = key.start_mark.line + 1
                walk(value, path + (key.value,))
                index[path + (key.value,)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return index


def _data_path(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop pydantic's union tags from an error location, keeping only keys present in the data."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) or isinstance(node, list):
            if part not in ("fixed", "range", "choices") and not _is_tag(part):
                path.append(part)
                node = None
    return tuple(path)


@functools.cache
def _union_tags() -> frozenset[str]:
    """The ``type`` values of the discriminated unions (samplers, trial pruners, data sources)."""
    from adalora_search.study.data_sources import Source
    from adalora_search.study.samplers import PrunerSpec, SamplerSpec

    members = [*_models_in(SamplerSpec), *_models_in(PrunerSpec), *_models_in(Source)]
    return frozenset(m.model_fields["type"].default for m in members if "type" in m.model_fields)


def _is_tag(part: Any) -> bool:
    """Pydantic's names for union branches in an error location (not keys of the study file)."""
    return isinstance(part, str) and (
        part.startswith(("function-", "Choices[", "list[", "dict["))
        or part[:1].isupper()
        or part in ("bool", "int", "float", "str")
        or part in _union_tags()
    )


def _render(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def without_other_branches(errors: list[Any], data: Any) -> list[Any]:
    """Drop a union's "should be a valid list" (or boolean) error when the value is a mapping whose own errors
    are shown (``objective: {metric, direction}`` or a list of them, ``compile: {mode}``): one problem, said once.
    """
    paths = [_data_path(tuple(e["loc"]), data) for e in errors]
    return [
        e
        for e, path in zip(errors, paths)
        if not (
            e["type"] in ("list_type", "bool_type")
            and isinstance(e.get("input"), dict)
            and any(o is not e and other[: len(path)] == path for o, other in zip(errors, paths))
        )
    ]


# constraints of the spec written as patterns, said in words
_PATTERNS = {
    r"^[A-Za-z0-9_.\-]+$": "use only letters, digits and _ . - (no spaces, slashes or other signs), e.g. bbc_news-v2"
}


def from_pydantic(err: dict[str, Any], data: Any, lines: dict[tuple[Any, ...], int]) -> Problem:
    """One pydantic error as a ``Problem``: the field's path in the file, its value, the message in words, the line."""
    path = _data_path(tuple(err["loc"]), data)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(path[:-1], data)
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        message = f"unknown key; {hint}allowed here: {', '.join(allowed)}"
    elif err["type"] == "missing":
        message = "required field is missing; add it"
    elif err["type"] == "string_pattern_mismatch":
        message = _PATTERNS.get(err.get("ctx", {}).get("pattern"), message)
    line = _nearest_line(path, lines)
    return Problem(_render(path), err.get("input") if err["type"] != "missing" else None, message, line)


def _nearest_line(path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def with_line(problem: Problem, lines: dict[tuple[Any, ...], int]) -> Problem:
    """``problem`` placed at the line of its field (or of the nearest enclosing key) in the file."""
    parts = tuple(p for p in problem.field.replace("[", ".").replace("]", "").split(".") if p)
    path = tuple(int(p) if p.isdigit() else p for p in parts)
    return Problem(problem.field, problem.value, problem.message, _nearest_line(path, lines))


def _allowed_keys(path: tuple[Any, ...], data: Any) -> list[str]:
    """Field names of the pydantic model that sits at ``path`` of the study file."""
    model: Any = StudySpec
    node = data
    for part in path:
        node = node[part] if isinstance(node, (dict, list)) else None
        if isinstance(part, int):
            continue
        model = _field_model(model, part, node)
        if model is None:
            return []
    return [field.alias or name for name, field in model.model_fields.items()] if model else []  # `from`, not `source`


def _field_model(model: type[BaseModel], name: str, node: Any) -> type[BaseModel] | None:
    field = model.model_fields.get(name)
    if field is None:
        return None
    candidates = [c for c in _models_in(field.annotation)]
    if isinstance(node, dict) and "type" in node:
        typed = [c for c in candidates if "type" in c.model_fields and c.model_fields["type"].default == node["type"]]
        candidates = typed or candidates
    return candidates[0] if candidates else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        root = annotation.model_fields.get("root")
        return _models_in(root.annotation) if root is not None else [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]

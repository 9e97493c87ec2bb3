"""Read a study file: safe YAML -> StudySpec -> cross-field rules, every problem in one report."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from adalora_search import rules
from adalora_search.errors import Problem, UserError
from adalora_search.spec import FilesSource, StudySpec


def load_spec(path: str | Path) -> StudySpec:
    """Parse and check a study file; raise ``UserError`` listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read study file {path}: {exc}; check the path") from None
    return _resolve_paths(parse_spec(text, str(path)), path.resolve().parent)


def _resolve_paths(spec: StudySpec, base: Path) -> StudySpec:
    """Relative data files and model directories are relative to the study file, not the working directory.

    ``model.name_or_path`` is taken as a directory beside the study file when one exists there (or
    when it starts with ``./`` or ``../``); otherwise it stays a packaged name or a Hub id.
    """
    name = spec.model.name_or_path
    if not Path(name).is_absolute() and ((base / name).is_dir() or name.startswith(("./", "../"))):
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"name_or_path": str(base / name)})})
    source = spec.data.source
    if not isinstance(source, FilesSource):
        return spec
    paths = {k: v if Path(v).is_absolute() else str(base / v) for k, v in source.paths.items()}
    data = spec.data.model_copy(update={"source": source.model_copy(update={"paths": paths})})
    return spec.model_copy(update={"data": data})


def parse_spec(text: str, source: str = "<string>") -> StudySpec:
    data = _safe_yaml(text, source)
    lines = _line_index(text)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        problems = [_from_pydantic(err, data, lines) for err in exc.errors()]
        raise UserError(f"{source}: {len(problems)} problem(s) in the study file", problems, source) from None
    problems = [_with_line(p, lines) for p in rules.check(spec)]
    if problems:
        raise UserError(f"{source}: {len(problems)} problem(s) in the search space", problems, source)
    return spec


def _safe_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = str(getattr(exc, "problem", None) or exc)
        if "python/" in str(exc):
            detail = "python YAML tags are refused (study files are plain data); remove the !!python tag"
        raise UserError(f"{source}: not valid YAML", [Problem("", None, detail, line)], source) from None
    if data is None:
        raise UserError(f"{source}: the study file is empty; start from studies/smoke.yaml", source=source)
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping with study/model/data/training keys, "
                        f"but got a {type(data).__name__}", source=source)
    return data


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path of the YAML document to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

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


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and (part.startswith(("function-", "Choices[")) or part[:1].isupper()
                                      or part in {"tpe", "random", "gp", "nsga2", "qmc", "grid", "median",
                                                  "percentile", "successive_halving", "hyperband",
                                                  "wilcoxon", "patient", "none", "packaged", "hub", "files"})


def _render(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _from_pydantic(err: dict[str, Any], data: Any, lines: dict[tuple[Any, ...], int]) -> Problem:
    path = _data_path(tuple(err["loc"]), data)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(path[:-1], data)
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        message = f"unknown key; {hint}allowed here: {', '.join(allowed)}"
    elif err["type"] == "missing":
        message = "required field is missing; add it"
    line = _nearest_line(path, lines)
    return Problem(_render(path), err.get("input") if err["type"] != "missing" else None, message, line)


def _nearest_line(path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _with_line(problem: Problem, lines: dict[tuple[Any, ...], int]) -> Problem:
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
    return list(model.model_fields) if model else []


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

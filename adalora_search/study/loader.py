"""Read a study file: safe YAML -> StudySpec -> cross-field rules, every problem in one report."""

from __future__ import annotations

import difflib
import functools
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from adalora_search.errors import Problem, UserError
from adalora_search.study import rules
from adalora_search.study.paths import resolve_paths
from adalora_search.study.space import with_typed_baselines
from adalora_search.study.spec import StudySpec

MAX_BYTES = 5 * 1024 * 1024  # study files are a few KB; anything this large is a mistake
MAX_DEPTH = 50  # nesting levels (a study file needs about 6)
MAX_NODES = 100_000  # YAML nodes after expanding aliases (refuses "billion laughs")
_FLOAT_12 = re.compile(r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)
                          |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)
_INT_12 = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$")  # no 1.1 octal 010, no 1:30
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_RESOLVED_12 = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


class StudyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads numbers and booleans as YAML 1.2 does, and refuses duplicate keys.

    YAML 1.1 (PyYAML's default) reads ``1e-3`` as a string and ``no``/``on`` as booleans; here
    ``1e-3``, ``-1E+3`` are floats and only true/false are booleans (pydantic still accepts
    yes/no for boolean fields). Nesting deeper than ``MAX_DEPTH`` is refused while composing.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels; a study "
                                                  "file needs about 6", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}: first at line {seen[key]}, again at line "
                        f"{key_node.start_mark.line + 1}; keep one", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _int_12(loader: StudyLoader, node: yaml.ScalarNode) -> int:
    """YAML 1.2 integers: decimal (010 is ten), 0o octal, 0x hex; underscores allowed as in PyYAML."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


StudyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _RESOLVED_12]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StudyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))
StudyLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_12, list("-+0123456789"))
StudyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
StudyLoader.add_constructor("tag:yaml.org,2002:int", _int_12)


def load_spec(path: str | Path) -> StudySpec:
    """Parse and check a study file; raise ``UserError`` listing every problem found."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path}: the study file is {path.stat().st_size / 2**20:.1f} MB; study files are "
                            f"small (limit {MAX_BYTES // 2**20} MB); check that this is the right file",
                            source=str(path))
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not "
                        "UTF-8); a study file is YAML text, check that this is the right file",
                        source=str(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read study file {path}: {exc.strerror or exc}; check the path") from None
    return resolve_paths(parse_spec(text, str(path)), path.resolve().parent)


def located(error: UserError, path: str | Path) -> UserError:
    """``error`` with its problems placed at their line of the study file ``path`` (for problems found
    after loading: data, model, platform); the error itself when it has no problems or the file is unreadable.
    """
    if not error.problems or error.source is not None:
        return error
    try:
        lines = _line_index(StudyLoader(Path(path).read_text(encoding="utf-8")).get_single_node())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return error
    return UserError(error.message, [p if p.line is not None else _with_line(p, lines) for p in error.problems],
                     str(path))


def parse_spec(text: str, source: str = "<string>") -> StudySpec:
    """Parse a study file's text; raise ``UserError`` listing every problem found."""
    if len(text) > MAX_BYTES:
        raise UserError(f"{source}: the study file is over {MAX_BYTES // 2**20} MB; study files are small; "
                        "check that this is the right file", source=source)
    data, root = _safe_yaml(text, source)
    lines = _line_index(root)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        problems = [_from_pydantic(err, data, lines) for err in _without_other_branches(exc.errors(), data)]
        raise UserError(f"{source}: {len(problems)} problem(s) in the study file", problems, source) from None
    problems = [_with_line(p, lines) for p in rules.check(spec)]
    if problems:
        raise UserError(f"{source}: {len(problems)} problem(s) in the study file", problems, source)
    return with_typed_baselines(spec)


def _safe_yaml(text: str, source: str) -> tuple[dict[str, Any], Any]:
    """The document (safe tags only, YAML 1.2 numbers, no duplicate keys) and its node tree."""
    loader = StudyLoader(text)
    try:
        root = loader.get_single_node()
        _check_tree(root, source)
        data = loader.construct_document(root) if root is not None else None
    except RecursionError:
        raise UserError(f"{source}: not valid YAML", [Problem("", None, "nested too deeply; a study file needs "
                                                              "about 6 levels")], source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = str(getattr(exc, "problem", None) or exc)
        if "'\\t'" in detail or "\t" in detail:
            detail += "; indent with spaces, not tabs (YAML does not allow tabs for indentation)"
        if "python/" in str(exc):
            detail = "python YAML tags are refused (study files are plain data); remove the !!python tag"
        raise UserError(f"{source}: not valid YAML", [Problem("", None, detail, line)], source) from None
    finally:
        loader.dispose()
    if data is None:
        raise UserError(f"{source}: the study file is empty; start from studies/smoke.yaml", source=source)
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping with study/model/data/training keys, "
                        f"but got a {type(data).__name__}", source=source)
    return data, root


def _check_tree(root: Any, source: str) -> None:
    """Refuse duplicate keys (all of them, with both lines) and documents whose alias-expanded tree
    is too deep or too large, before anything is built from the nodes.
    """
    stack: list[tuple[Any, int, str]] = [(root, 1, "")] if root is not None else []
    count, duplicates = 0, {}
    while stack:
        node, depth, path = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_NODES:
            what = f"nested deeper than {MAX_DEPTH} levels" if depth > MAX_DEPTH else f"over {MAX_NODES:,} values"
            raise UserError(f"{source}: not valid YAML", [Problem(path, None, f"the document is {what} once its "
                            "aliases (*name) are expanded; a study file is small and flat",
                            node.start_mark.line + 1)], source)
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                line, name = key.start_mark.line + 1, f"{path}.{key.value}" if path else str(key.value)
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in seen:
                        shown = value.value if isinstance(value, yaml.ScalarNode) else (
                            "{...}" if isinstance(value, yaml.MappingNode) else "[...]")
                        duplicates[line] = Problem(name, shown, f"duplicate key {key.value!r}: first at line "
                                                   f"{seen[key.tag, key.value]}, again at line {line}; keep one "
                                                   "(YAML would silently keep only the last)", line)
                    seen.setdefault((key.tag, key.value), line)
                stack += [(key, depth + 1, name), (value, depth + 1, name)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, depth + 1, f"{path}[{i}]") for i, item in enumerate(node.value)]
    if duplicates:
        raise UserError(f"{source}: {len(duplicates)} duplicate key(s)", [duplicates[k] for k in sorted(duplicates)],
                        source)


def _line_index(root: Any) -> dict[tuple[Any, ...], int]:
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
    return isinstance(part, str) and (part.startswith(("function-", "Choices[", "list[", "dict[")) or part[:1].isupper()
                                      or part in _union_tags())


def _render(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _without_other_branches(errors: list[Any], data: Any) -> list[Any]:
    """Drop a union's "should be a valid list" error when the value is a mapping whose own errors are shown
    (``objective: {metric, direction}`` or a list of them): one problem, said once.
    """
    paths = [_data_path(tuple(e["loc"]), data) for e in errors]
    return [e for e, path in zip(errors, paths)
            if not (e["type"] == "list_type" and isinstance(e.get("input"), dict)
                    and any(o is not e and other[:len(path)] == path for o, other in zip(errors, paths)))]


# constraints of the spec written as patterns, said in words
_PATTERNS = {r"^[A-Za-z0-9_.\-]+$": "use only letters, digits and _ . - (no spaces, slashes or other signs), "
                                     "e.g. bbc_news-v2"}


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
    elif err["type"] == "string_pattern_mismatch":
        message = _PATTERNS.get(err.get("ctx", {}).get("pattern"), message)
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

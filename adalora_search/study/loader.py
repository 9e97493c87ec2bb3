"""Read a study file: safe YAML -> StudySpec -> cross-field rules, every problem in one report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adalora_search.errors import Problem, UserError
from adalora_search.study import locations, rules
from adalora_search.study.paths import resolve_paths
from adalora_search.study.space import with_typed_baselines
from adalora_search.study.spec import StudySpec

MAX_BYTES = 5 * 1024 * 1024  # study files are a few KB; anything this large is a mistake
MAX_DEPTH = 50  # nesting levels (a study file needs about 6)
MAX_NODES = 100_000  # YAML nodes after expanding aliases (refuses "billion laughs")
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)
                          |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    re.X,
)
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
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels; a study file needs about 6",
                    self.peek_event().start_mark,
                )
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
                        None,
                        None,
                        f"duplicate key {key!r}: first at line {seen[key]}, again at line "
                        f"{key_node.start_mark.line + 1}; keep one",
                        key_node.start_mark,
                    )
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
            raise UserError(
                f"{path}: the study file is {path.stat().st_size / 2**20:.1f} MB; study files are "
                f"small (limit {MAX_BYTES // 2**20} MB); check that this is the right file",
                source=str(path),
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not a text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not "
            "UTF-8); a study file is YAML text, check that this is the right file",
            source=str(path),
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read study file {path}: {exc.strerror or exc}; check the path") from None
    spec = resolve_paths(parse_spec(text, str(path)), path.resolve().parent)
    spec._file = path.resolve()
    return spec


def located(error: UserError, path: str | Path) -> UserError:
    """``error`` with its problems placed at their line of the study file ``path`` (for problems found
    after loading: data, model, platform); the error itself when it has no problems or the file is unreadable.
    """
    if not error.problems or error.source is not None:
        return error
    try:
        lines = locations.line_index(StudyLoader(Path(path).read_text(encoding="utf-8")).get_single_node())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return error
    placed = [p if p.line is not None else locations.with_line(p, lines) for p in error.problems]
    return UserError(error.message, placed, str(path))


def parse_spec(text: str, source: str = "<string>") -> StudySpec:
    """Parse a study file's text; raise ``UserError`` listing every problem found."""
    if len(text) > MAX_BYTES:
        raise UserError(
            f"{source}: the study file is over {MAX_BYTES // 2**20} MB; study files are small; "
            "check that this is the right file",
            source=source,
        )
    data, root = _safe_yaml(text, source)
    lines = locations.line_index(root)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        errors = locations.without_other_branches(exc.errors(), data)
        problems = [locations.from_pydantic(err, data, lines) for err in errors]
        raise UserError(f"{source}: {len(problems)} problem(s) in the study file", problems, source) from None
    problems = [locations.with_line(p, lines) for p in rules.check(spec)]
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
        raise UserError(
            f"{source}: not valid YAML",
            [Problem("", None, "nested too deeply; a study file needs about 6 levels")],
            source,
        ) from None
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
        raise UserError(
            f"{source}: the top level must be a mapping with study/model/data/training keys, "
            f"but got a {type(data).__name__}",
            source=source,
        )
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
            raise UserError(
                f"{source}: not valid YAML",
                [
                    Problem(
                        path,
                        None,
                        f"the document is {what} once its aliases (*name) are expanded; a study file is small and flat",
                        node.start_mark.line + 1,
                    )
                ],
                source,
            )
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                line, name = key.start_mark.line + 1, f"{path}.{key.value}" if path else str(key.value)
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in seen:
                        shown = (
                            value.value
                            if isinstance(value, yaml.ScalarNode)
                            else ("{...}" if isinstance(value, yaml.MappingNode) else "[...]")
                        )
                        duplicates[line] = Problem(
                            name,
                            shown,
                            f"duplicate key {key.value!r}: first at line "
                            f"{seen[key.tag, key.value]}, again at line {line}; keep one "
                            "(YAML would silently keep only the last)",
                            line,
                        )
                    seen.setdefault((key.tag, key.value), line)
                stack += [(key, depth + 1, name), (value, depth + 1, name)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, depth + 1, f"{path}[{i}]") for i, item in enumerate(node.value)]
    if duplicates:
        raise UserError(
            f"{source}: {len(duplicates)} duplicate key(s)", [duplicates[k] for k in sorted(duplicates)], source
        )

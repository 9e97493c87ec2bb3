"""Cross-field rules, checked on the corners of the search space before anything is loaded.

Every rule returns ``Problem``s instead of raising, so a user sees all of them at once.
``target_r`` is not sampled conditionally on ``init_r``: a space in which any corner has
``target_r >= init_r`` is rejected (PEFT's rank allocator crashes in ``kthvalue`` otherwise).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from adalora_search.errors import Problem
from adalora_search.study.distributions import Choices, corners, is_searched
from adalora_search.study.samplers import Grid, NoPruner
from adalora_search.study.space import (
    KNOBS,
    build_config,
    knob,
    knob_problem,
    rank_problem,
    searched_knobs,
    typed_value,
)
from adalora_search.study.spec import StudySpec
from adalora_search.tasks import Task, get_task
from adalora_search.urls import artifact_location_problem, mask, url_problem


def check(spec: StudySpec) -> list[Problem]:
    """All cross-field problems of a parsed spec (empty when the space is sound)."""
    problems: list[Problem] = []
    problems += _ranks(spec, {p: corners(knob(spec, p)) for p in KNOBS}, "adalora")
    problems += _schedule(spec, {p: corners(knob(spec, p)) for p in KNOBS}, "adalora.schedule")
    problems += _bounds(spec)
    problems += _compile(spec)
    problems += _study(spec)
    problems += get_task(spec.model.task).check_data(spec.data)
    problems += get_task(spec.model.task).check_training(spec.training, spec.data)
    problems += _baselines(spec)
    return problems


def _ranks(spec: StudySpec, c: dict[str, list[Any]], where: str) -> list[Problem]:
    max_target = max(c["adalora.target_r"])
    problem = rank_problem(
        max_target, min(c["adalora.init_r"]), searched=len(c["adalora.target_r"]) > 1 or len(c["adalora.init_r"]) > 1
    )
    return [] if problem is None else [Problem(f"{where}.target_r", max_target, problem)]


def check_total_steps(spec: StudySpec, total: int) -> list[Problem]:
    """The schedule rules once the data fixes the number of optimizer steps (epochs-based runs)."""
    c = {p: corners(knob(spec, p)) for p in KNOBS}
    out = _schedule(spec, c, "adalora.schedule", total) if spec.adalora.schedule.unit == "steps" else []
    return out or _first_scores(spec, c, total)


def _first_scores(spec: StudySpec, c: dict[str, list[Any]], total: int) -> list[Problem]:
    """PEFT's final allocation (at step total - t_final) ranks importance scores gathered on the steps before
    it: with none (t_final = total - 1, t_init 0) its allocator raises a KeyError in every trial.
    """
    worst = max(c["adalora.schedule.t_final"])
    steps = int(worst * total) if spec.adalora.schedule.unit == "fraction" else int(worst)
    if total - steps < 2:
        return [
            Problem(
                "adalora.schedule.t_final",
                worst,
                f"leaves {total - steps} of the run's {total} optimizer "
                "steps before the final allocation; AdaLoRA needs at least 2 (importance scores are "
                "gathered on the steps before it); lower t_final or train longer",
            )
        ]
    return []


def _schedule(spec: StudySpec, c: dict[str, list[Any]], where: str, total: int | None = None) -> list[Problem]:
    unit = spec.adalora.schedule.unit
    worst = max(c["adalora.schedule.t_init"]) + max(c["adalora.schedule.t_final"])
    if unit == "fraction":
        if worst < 1:
            return []
        return [
            Problem(
                where,
                worst,
                "t_init + t_final must be < 1 (fractions of total steps) for every "
                "sample, so that a budgeting phase is left; lower the highs of t_init or t_final",
            )
        ]
    out = [
        Problem(f"{where}.{name}", v, "with unit: steps, t_init and t_final must be whole steps")
        for name in ("t_init", "t_final")
        for v in c[f"adalora.schedule.{name}"]
        if float(v) != int(v)
    ]
    total = total or spec.training.max_steps
    if total is not None and worst >= total:
        out.append(
            Problem(
                where,
                worst,
                f"t_init + t_final must be < the run's {total} optimizer steps for every "
                "sample, so that a budgeting phase is left; lower t_init/t_final or train longer",
            )
        )
    elif total is not None:
        out += _first_scores(spec, c, total)
    return out


def _bounds(spec: StudySpec) -> list[Problem]:
    """Every value each knob can take (fixed, each choice, both ends of a range) against its constraints."""
    return [
        Problem(path, value, problem)
        for path in KNOBS
        for value in corners(knob(spec, path))
        if (problem := knob_problem(path, value)) is not None
    ]


def _compile(spec: StudySpec) -> list[Problem]:
    """What ``training.compile`` cannot be combined with (unverified here: refused rather than guessed)."""
    settings = spec.training.compile
    problems: list[Problem] = []
    if settings is not False and spec.model.quantization != "none":
        problems.append(
            Problem(
                "training.compile",
                settings,
                f"torch.compile of a bitsandbytes-quantized base (model.quantization = {spec.model.quantization}) is "
                "not verified by adalora-search; set training.compile: false, or model.quantization: none",
            )
        )
    if not isinstance(settings, bool) and settings.cuda_graphs and spec.training.gradient_accumulation > 1:
        mode = settings.mode
        problems.append(
            Problem(
                "training.compile.mode",
                mode,
                f"mode {mode} records CUDA graphs, whose gradient memory the next replay reuses: gradients cannot "
                f"accumulate over gradient_accumulation = {spec.training.gradient_accumulation} batches; use mode "
                "default or max-autotune-no-cudagraphs, or gradient_accumulation: 1",
            )
        )
    multiple = spec.data.pad_to_multiple_of
    if multiple is not None and multiple > spec.data.max_length:
        problems.append(
            Problem(
                "data.pad_to_multiple_of",
                multiple,
                f"pad_to_multiple_of must be <= data.max_length ({spec.data.max_length}), but got {multiple}; "
                "e.g. 16 or 32",
            )
        )
    return problems


def _metric(spec: StudySpec, task: Task, where: str, metric: str, allowed: set[str]) -> list[Problem]:
    """A metric named at ``where`` must be one of ``allowed`` and usable with this data."""
    if metric not in allowed:
        return [Problem(where, metric, f"not a {spec.model.task} metric; use one of {sorted(allowed)}")]
    if (reason := task.check_metric(spec.data, metric)) is not None:
        return [Problem(where, metric, reason)]
    return []


def _pruning_metric(spec: StudySpec, task: Task) -> list[Problem]:
    """``study.pruning_metric`` must be a metric of the task that is computed at every evaluation."""
    metric, where = spec.study.pruning_metric, "study.pruning_metric"
    if metric is None:
        return []
    if len(spec.study.objectives) > 1:
        return [Problem(where, metric, "a multi-objective study prunes no trials; remove study.pruning_metric")]
    if problems := _metric(spec, task, where, metric, set(task.metrics)):
        return problems
    if metric in task.generation_metrics and not spec.training.generation.at_evals:
        return [
            Problem(
                where,
                metric,
                "generation metrics are computed after training only; prune on eval_loss, "
                "or set training.generation.at_evals: true",
            )
        ]
    return []


def _study(spec: StudySpec) -> list[Problem]:
    out = []
    objectives = spec.study.objectives
    if len(objectives) > 1 and not isinstance(spec.study.pruner.root, NoPruner):
        out.append(
            Problem(
                "study.pruner",
                spec.study.pruner.root.type,
                "Optuna cannot prune trials of a multi-objective study; set pruner: {type: none}, "
                "or use one objective and cap trainable parameters with a target_r range",
            )
        )
    task = get_task(spec.model.task)
    if spec.model.chat_template is not None and not task.generates:
        out.append(
            Problem(
                "model.chat_template",
                spec.model.chat_template[:40],
                f"model.task {spec.model.task} renders no chat; remove model.chat_template",
            )
        )
    elif spec.model.chat_template is not None and (syntax := _jinja_problem(spec.model.chat_template)):
        out.append(Problem("model.chat_template", spec.model.chat_template[:40], syntax))
    for i, objective in enumerate(objectives):
        where = f"study.objective[{i}].metric" if len(objectives) > 1 else "study.objective.metric"
        out += _metric(spec, task, where, objective.metric, {*task.metrics, "trainable_params"})
    out += _pruning_metric(spec, task)
    if isinstance(spec.study.sampler.root, Grid):
        for path, dist in searched_knobs(spec):
            if not isinstance(dist, Choices):
                out.append(Problem(path, dist.model_dump(), "the grid sampler needs {choices: [...]} here"))
    if "keep_top_k_adapters" in spec.study.model_fields_set and spec.study.keep_top_k_adapters and len(objectives) > 1:
        out.append(
            Problem(
                "study.keep_top_k_adapters",
                spec.study.keep_top_k_adapters,
                "a multi-objective study has no top-k; keep adapters with one objective, or set 0 and "
                "retrain the exported Pareto trial you pick",
            )
        )
    if spec.study.storage and (problem := url_problem(spec.study.storage)):
        out.append(Problem("study.storage", mask(spec.study.storage), problem))
    if spec.study.artifact_store and (problem := artifact_location_problem(spec.study.artifact_store)):
        out.append(Problem("study.artifact_store", spec.study.artifact_store, problem))
    return out


def _baselines(spec: StudySpec) -> list[Problem]:
    out: list[Problem] = []
    seen: set[str] = set()
    for i, baseline in enumerate(spec.baselines):
        where = f"baselines[{i}]"
        if baseline.name in seen:
            out.append(Problem(f"{where}.name", baseline.name, "baseline names must be unique"))
        seen.add(baseline.name)
        values: dict[str, Any] = {}
        for path in KNOBS:
            spec_value = knob(spec, path)
            if path in baseline.params:
                try:
                    values[path] = typed_value(path, baseline.params[path])
                except ValueError as exc:
                    out.append(Problem(f"{where}.params.{path}", baseline.params[path], str(exc)))
                    values[path] = corners(spec_value)[0]
                    continue
                if isinstance(spec_value, Choices) and values[path] not in spec_value.choices:
                    out.append(
                        Problem(
                            f"{where}.params.{path}",
                            values[path],
                            f"not one of the study's choices {spec_value.choices}; add it there",
                        )
                    )
            elif is_searched(spec_value):
                out.append(
                    Problem(
                        f"{where}.params",
                        sorted(baseline.params),
                        f"a baseline must fix every searched knob; add {path}",
                    )
                )
                values[path] = corners(spec_value)[0]
            else:
                values[path] = spec_value
        for path in sorted(set(baseline.params) - set(KNOBS)):
            out.append(
                Problem(f"{where}.params.{path}", baseline.params[path], f"unknown knob; use one of {list(KNOBS)}")
            )
        out += _baseline_values(spec, values, where)
    return out


def _baseline_values(spec: StudySpec, values: dict[str, Any], where: str) -> list[Problem]:
    c = {p: [v] for p, v in values.items()}
    out = _ranks(spec, c, f"{where}.params[adalora]") + _schedule(spec, c, f"{where}.params[adalora.schedule]")
    try:
        build_config(spec, values)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            out.append(Problem(f"{where}.params[{loc}]", err.get("input"), err["msg"]))
    return out


def _jinja_problem(template: str) -> str | None:
    """Why ``template`` does not parse as a chat template (Jinja2 with transformers' ``generation`` and loop
    control tags), or None.
    """
    import jinja2
    import jinja2.ext

    class Generation(jinja2.ext.Extension):
        tags = {"generation"}  # noqa: RUF012 - jinja2's extension API

        def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    try:
        jinja2.Environment(extensions=[Generation, jinja2.ext.loopcontrols]).parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return f"not a Jinja template: {exc.message} (template line {exc.lineno}); fix the template's syntax"
    return None

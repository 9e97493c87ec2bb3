"""Warm start (``study.warm_start``): configurations run as a new study's first trials, before its sampler's own.

``portfolio``: the few configurations in ``search/portfolio.py``, chosen on the benchmark tables
(``bench/choose_portfolio.py``). ``{from: EARLIER_STUDY, top_k: K}``: the K best completed trials of an earlier
study (another task, another model), ranked on its first objective. Either way a configuration is a value per
knob path (of an earlier study: the knobs it searched), fitted into this study's space knob by knob (``fit``): a
value inside this study's range or among its choices is kept; target modules are matched by the kinds of matrix
they name (``query``, ``ffn_in``, ...: ``train/module_kinds.py``), so BERT's ``[query, value]`` starts a Llama
study at ``[q_proj, v_proj]``; a knob left out (outside the space, fixed in the earlier study, a schedule in other
units) is sampled as usual. Each is enqueued once, with the user attr ``warm_start`` saying where it came from.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from adalora_search.errors import UserError
from adalora_search.search import storage as storage_mod
from adalora_search.search.portfolio import PORTFOLIO
from adalora_search.study.distributions import Choices, FloatRange, IntRange, encode_choice
from adalora_search.study.paths import sqlite_beside
from adalora_search.study.space import KNOBS, TrialConfig, knob, searched_knobs
from adalora_search.study.spec import StudySpec
from adalora_search.study.study_section import WarmStartFrom
from adalora_search.train.module_kinds import module_type
from adalora_search.urls import check_url, mask

ATTR = "warm_start"  # trial user attr: where an enqueued configuration came from
ENQUEUED = "warm_start_enqueued"  # study user attr: the warm start was enqueued (once per study)
_SCHEDULE = ("adalora.schedule.t_init", "adalora.schedule.t_final")  # their unit is the schedule's


def plan(spec: StudySpec) -> list[tuple[dict[str, Any], str]]:
    """The warm start's trials: (Optuna params of the searched knobs it fixes, origin), in order, distinct.

    Raises:
        UserError: naming ``study.warm_start``: the earlier study is missing, has no completed trial, optimises
            the other way, or none of its configurations has a value inside this study's space.
    """
    warm = spec.study.warm_start
    if warm is None:
        return []
    sources = list(_portfolio()) if warm == "portfolio" else list(_earlier(spec, warm))
    out: list[tuple[dict[str, Any], str]] = []
    for values, origin in sources:
        params = fit(spec, values)
        if params and all(params != p for p, _ in out):
            out.append((params, origin))
    if not out:
        searched = [path for path, _ in searched_knobs(spec)]
        raise UserError(
            f"study.warm_start = {_show(warm)}: none of its configurations has a value inside this study's space "
            f"(searched here: {', '.join(searched) or 'nothing'}); widen the ranges, or remove study.warm_start"
        )
    return out


def pending(study: optuna.Study, spec: StudySpec) -> list[tuple[dict[str, Any], str]] | None:
    """``plan(spec)`` while ``study`` has not enqueued its warm start yet, else None (a resumed study needs the
    earlier one no more). Called outside the claim lock: the earlier study may live in the same storage.
    """
    if spec.study.warm_start is None or study.user_attrs.get(ENQUEUED):
        return None
    return plan(spec)


def enqueue(study: optuna.Study, planned: list[tuple[dict[str, Any], str]] | None) -> None:
    """Enqueue ``pending``'s configurations once per study (under the claim lock: one worker of many does it)."""
    if planned is None or study.user_attrs.get(ENQUEUED):
        return
    for params, origin in planned:
        study.enqueue_trial(params, user_attrs={ATTR: origin})
    study.set_user_attr(ENQUEUED, True)


def fit(spec: StudySpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna params for each searched knob of ``spec`` that ``values`` (knob path -> value) puts in its space."""
    out: dict[str, Any] = {}
    for path, dist in searched_knobs(spec):
        value = values.get(path)
        if value is None or (path in _SCHEDULE and values.get("adalora.schedule.unit") != spec.adalora.schedule.unit):
            continue
        if isinstance(dist, Choices):
            picked = (
                match_modules(value, dist.choices) if path == "adalora.target_modules" else _choice(value, dist.choices)
            )
            if picked is not None:
                out[path] = encode_choice(picked)
        elif isinstance(dist, (FloatRange, IntRange)) and _inside(value, dist):
            out[path] = int(value) if isinstance(dist, IntRange) else float(value)
    return out


def _inside(value: Any, dist: FloatRange | IntRange) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not dist.low <= value <= dist.high:
        return False
    if isinstance(dist, IntRange):
        return float(value).is_integer() and (int(value) - dist.low) % dist.step == 0
    return dist.step is None or abs((value - dist.low) / dist.step - round((value - dist.low) / dist.step)) < 1e-9


def _choice(value: Any, choices: list[Any]) -> Any:
    return next((c for c in choices if c == value and type(c) is not bool), None)


def match_modules(value: Any, choices: list[Any]) -> list[str] | None:
    """The choice naming the same modules, else the one whose kinds of matrix best overlap the value's (Jaccard
    above 1/2), else None.
    """
    names = value.split(",") if isinstance(value, str) else list(value)
    if names in choices:
        return names
    kinds = {module_type(n) for n in names}
    scored = [(len(kinds & k) / len(kinds | k), c) for c in choices if (k := {module_type(n) for n in c})]
    best = max(scored, key=lambda sc: sc[0], default=(0.0, None))
    return best[1] if best[0] > 0.5 else None


def _portfolio() -> Iterator[tuple[dict[str, Any], str]]:
    for i, values in enumerate(PORTFOLIO):
        yield {"adalora.schedule.unit": "fraction", **values}, f"portfolio #{i + 1}"


def _earlier(spec: StudySpec, warm: WarmStartFrom) -> Iterator[tuple[dict[str, Any], str]]:
    """The earlier study's ``top_k`` best completed trials as knob values, best first."""
    study = _open(spec, warm)
    direction = study.directions[0]
    mine = spec.study.objectives[0]
    if direction.name.lower() != mine.resolved_direction:
        raise UserError(
            f"study.warm_start.from = {warm.source!r}: study {study.study_name!r} {direction.name.lower()}s its "
            f"objective, this study {mine.resolved_direction}s {mine.metric}: a warm start takes configurations "
            "ranked the way this study ranks; warm-start from a study optimised the same way, or give the "
            "configurations you want first as study baselines"
        )
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "config" in t.user_attrs]
    if not done:
        raise UserError(
            f"study.warm_start.from = {warm.source!r}: study {study.study_name!r} has no completed trial yet; "
            "run it first, or remove study.warm_start"
        )
    done.sort(key=lambda t: t.values[0], reverse=direction == optuna.study.StudyDirection.MAXIMIZE)
    for t in done[: warm.top_k]:
        try:
            config = TrialConfig.model_validate(t.user_attrs["config"])
        except ValueError:  # a config stored by another version of the tool: its searched values are enough
            config = None
        searched = {path: knob(config, path) if config else t.params[path] for path in KNOBS if path in t.params}
        unit = config.adalora.schedule.unit if config else None  # unknown: its t_init / t_final are left out
        yield {**searched, "adalora.schedule.unit": unit}, f"{study.study_name} trial {t.number}"


def _open(spec: StudySpec, warm: WarmStartFrom) -> optuna.Study:
    """The earlier study, from its study file (beside this one) or its storage URL and ``study`` name."""
    base = spec.study_file.parent if spec.study_file is not None else Path.cwd()
    field = "study.warm_start.from"
    if "://" in warm.source:
        check_url(warm.source, field)
        url, name = sqlite_beside(warm.source, base), warm.study
        if name is None:
            raise UserError(f"study.warm_start.study: name the study in {mask(url)} (study: NAME)")
    else:
        from adalora_search.study.loader import load_spec

        path = base / warm.source
        if not path.is_file():
            raise UserError(
                f"{field} = {warm.source!r}: no such study file ({path}); give an earlier study's file, relative "
                "to this one, or its storage URL with study.warm_start.study"
            )
        try:
            earlier = load_spec(path)
        except UserError as exc:
            raise UserError(f"{field} = {warm.source!r}: the earlier study file cannot be read: {exc}") from None
        url = earlier.study.storage or storage_mod.default_url(path, earlier.study.name)
        name = warm.study or earlier.study.name
    if url.startswith("sqlite") and not Path(url.split(":///", 1)[-1].split("?")[0]).is_file():
        raise UserError(f"{field} = {warm.source!r}: no study storage at {mask(url)}; run that study first")
    try:
        return optuna.load_study(study_name=name, storage=storage_mod.open_storage(url))
    except UserError as exc:  # the earlier study's storage, not this study's
        raise UserError(str(exc).replace("study.storage", field, 1)) from None
    except KeyError:
        raise UserError(f"{field} = {warm.source!r}: no study {name!r} in {mask(url)}; name it with study") from None


def _show(warm: Any) -> str:
    return repr(warm) if isinstance(warm, str) else f"{{from: {warm.source!r}, top_k: {warm.top_k}}}"

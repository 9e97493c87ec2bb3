"""Search strategies to replay (issue #34, item 3): Optuna's samplers and pruners as they ship, by name.

An arm's name is ``[warm-]SAMPLER[+PRUNER][@eval_loss]``: ``tpe+sha@eval_loss`` is TPE with successive halving
reading ``eval_loss``. ``default`` is what a study gets when it names no sampler or pruner (built from the
tool's own schema defaults, so the replay follows the tool). Pruners are asked from ``prune_from`` on (the
first evaluation after AdaLoRA's first rank pruning, as the tool's ``prune_warmup: after_t_init``). A
``warm-`` arm first asks the warm-start portfolio (``study.warm_start: portfolio``: the tool's own, or one passed
in, e.g. chosen without the replayed table), fitted into the table's space as the tool fits it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import optuna

from adalora_search.search.portfolio import PORTFOLIO
from adalora_search.search.warm_start import match_modules
from adalora_search.study import samplers

from .replay import Arm, Params, Table

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: samplers.TPE(seed=seed).build(),  # the schema's TPE (10 start-up trials)
    "tpe-mv": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "tpe-group": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
    "tpe-5": lambda seed: samplers.TPE(seed=seed, n_startup_trials=5).build(),
    "gp": lambda seed: samplers.GP(seed=seed).build(),
    "qmc": lambda seed: samplers.QMC(seed=seed).build(),
}
PRUNERS = ("none", "median", "sha", "hyperband", "wilcoxon", "patient")


def pruner(name: str, first_rung: int, total_steps: int) -> Callable[[], optuna.pruners.BasePruner]:
    """The pruner ``name`` with its rungs from ``first_rung`` (optimizer steps) to ``total_steps``."""
    specs = {
        "none": samplers.NoPruner(),
        "median": samplers.Median(),
        "sha": samplers.SuccessiveHalving(min_resource=first_rung),
        "hyperband": samplers.Hyperband(min_resource=first_rung, max_resource=total_steps),
        "wilcoxon": samplers.Wilcoxon(),
        "patient": samplers.Patient(),
    }
    spec = specs[name]
    return spec.build


def fitted(table: Table, portfolio: Sequence[Params]) -> list[Params]:
    """The portfolio's configurations as the table's parameters: a value inside a knob's choices (a number within
    their range: the replay snaps it) is kept, target modules matched by kinds; the rest is left to the sampler."""
    out = []
    for values in portfolio:
        params = {}
        for knob, choices in table.space.items():
            value = values.get(knob)
            if knob == "adalora.target_modules" and value is not None:
                picked = match_modules(value, [c.split(",") for c in choices])
                value = ",".join(picked) if picked else None
            numeric = isinstance(value, (int, float)) and all(isinstance(c, (int, float)) for c in choices)
            if value in choices or (numeric and min(choices) <= value <= max(choices)):
                params[knob] = value
        if params:
            out.append(params)
    return out


def arm(name: str, first_rung: int, total_steps: int, portfolio: Sequence[Params] = PORTFOLIO) -> Arm:
    """The arm called ``name`` (see the module docstring); ``ValueError`` naming the known ones otherwise."""
    if name.startswith("warm-"):
        cold = arm(name.removeprefix("warm-"), first_rung, total_steps)
        return replace(cold, name=name, enqueue=lambda table: fitted(table, portfolio))
    base, _, metric = name.partition("@")
    if base == "default":
        sampler_spec, pruner_spec = samplers.SamplerSpec.default().root, samplers.PrunerSpec.default().root
        return Arm(name, lambda seed: sampler_spec.model_copy(update={"seed": seed}).build(), pruner_spec.build)
    sampler_name, _, pruner_name = base.partition("+")
    if sampler_name not in SAMPLERS or (pruner_name or "none") not in PRUNERS or metric not in ("", "eval_loss"):
        raise ValueError(
            f"unknown arm {name!r}: use default or SAMPLER[+PRUNER][@eval_loss] with SAMPLER in "
            f"{sorted(SAMPLERS)} and PRUNER in {list(PRUNERS)}"
        )
    return Arm(
        name,
        SAMPLERS[sampler_name],
        pruner(pruner_name or "none", first_rung, total_steps),
        pruning_metric=metric or None,
        prune_from=first_rung,
    )

"""Search strategies to replay (issue #34, item 3): Optuna's samplers and pruners as they ship, by name.

An arm's name is ``SAMPLER[+PRUNER][@eval_loss]``: ``tpe+sha@eval_loss`` is TPE with successive halving
reading ``eval_loss``. ``default`` is what a study gets when it names no sampler or pruner (built from the
tool's own schema defaults, so the replay follows the tool). Pruners are asked from ``prune_from`` on (the
first evaluation after AdaLoRA's first rank pruning, as the tool's ``prune_warmup: after_t_init``).
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from adalora_search.study import samplers

from .replay import Arm

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


def arm(name: str, first_rung: int, total_steps: int) -> Arm:
    """The arm called ``name`` (see the module docstring); ``ValueError`` naming the known ones otherwise."""
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

"""One ranking of a study's trials: what `status`, `report`, `export`, references and the summary call "best".

One objective: by value in the study's direction, ties to the earlier trial (as Optuna's
``best_trial``). Several objectives: non-dominated sorting (Optuna's Pareto front first, then the
front of what is left, ...), each front ordered by the first objective, ties to the earlier trial.
"""

from __future__ import annotations

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with values, best first."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]

    def key(t: FrozenTrial) -> tuple[float, int]:
        return signs[0] * t.values[0], t.number

    if len(signs) == 1:
        return sorted(trials, key=key)
    out: list[FrozenTrial] = []
    rest = trials
    while rest:
        front = [t for t in rest if not any(_dominates(o, t, signs) for o in rest)]
        out += sorted(front, key=key)
        rest = [t for t in rest if t not in front]
    return out


def best(study: optuna.Study) -> FrozenTrial | None:
    """The first of ``ranked``: the best trial, or the Pareto front's best first objective."""
    order = ranked(study)
    return order[0] if order else None


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated completed trials (Optuna's ``best_trials``), in ranking order."""
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    order = ranked(study)
    return [t for t in order if not any(_dominates(o, t, signs) for o in order)]


def _dominates(a: FrozenTrial, b: FrozenTrial, signs: list[float]) -> bool:
    """A is no worse than b in every objective and better in one (minimisation after signs)."""
    x = [s * v for s, v in zip(signs, a.values)]
    y = [s * v for s, v in zip(signs, b.values)]
    return all(p <= q for p, q in zip(x, y)) and any(p < q for p, q in zip(x, y))

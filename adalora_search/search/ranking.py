"""One ranking of a study's trials: what `status`, `report`, `export`, references, the summary and the
kept adapters' top-k call "best".

One objective: by value in the study's direction, ties to the earlier trial (as Optuna's
``best_trial``). Several objectives: non-dominated sorting (Optuna's Pareto front first, then the
front of what is left, ...), each front ordered by the first objective, ties to the earlier trial.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

_Entry = tuple[int, Sequence[float]]  # (trial number, objective values)


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with values, best first."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values}
    return [trials[n] for n, _ in _order([(n, t.values) for n, t in trials.items()], study.directions)]


def best(study: optuna.Study) -> FrozenTrial | None:
    """The first of ``ranked``: the best trial, or the Pareto front's best first objective."""
    order = ranked(study)
    return order[0] if order else None


def top_k(study: optuna.Study, k: int, number: int, values: Sequence[float]) -> set[int]:
    """Numbers of the ``k`` first trials in ``ranked``'s order, counting trial ``number`` with ``values``,
    which is still running (its values are not stored yet) with the completed ones.
    """
    done = [
        (t.number, t.values)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and t.number != number
    ]
    return {n for n, _ in _order([*done, (number, values)], study.directions)[:k]}


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated completed trials (Optuna's ``best_trials``), in ranking order."""
    signs = _signs(study.directions)
    order = ranked(study)
    return [t for t in order if not any(_dominates(o.values, t.values, signs) for o in order)]


def _order(entries: list[_Entry], directions: Sequence[StudyDirection]) -> list[_Entry]:
    signs = _signs(directions)

    def key(entry: _Entry) -> tuple[float, int]:
        return signs[0] * entry[1][0], entry[0]

    if len(signs) == 1:
        return sorted(entries, key=key)
    out: list[_Entry] = []
    rest = entries
    while rest:
        front = [e for e in rest if not any(_dominates(o[1], e[1], signs) for o in rest)]
        out += sorted(front, key=key)
        rest = [e for e in rest if e not in front]
    return out


def _signs(directions: Sequence[StudyDirection]) -> list[float]:
    return [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions]


def _dominates(a: Sequence[float], b: Sequence[float], signs: list[float]) -> bool:
    """A is no worse than b in every objective and better in one (minimisation after signs)."""
    x = [s * v for s, v in zip(signs, a)]
    y = [s * v for s, v in zip(signs, b)]
    return all(p <= q for p, q in zip(x, y)) and any(p < q for p, q in zip(x, y))

"""What a study's results cannot be trusted for, said wherever they are shown (``status``, the run's
summary, the report).

Two kinds: what loading did to the data (rows truncated, left out, repeated; study user attr
``data_notes``, written by each worker from ``TokenizedData.notes``) and an objective that cannot rank
trials because it never moves (the same value at every evaluation of every finished trial, to 1e-9,
while another metric does: a metric reading labels it does not understand, a single class).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from adalora_search.search.record import StudyRecord, TrialRecord

DATA_NOTES = "data_notes"  # study user attr: list of sentences
CONSTANT = 1e-9
_NOT_METRICS = {"step", "budget", "predicted_classes"}


def constant_objectives(study: optuna.Study) -> list[str]:
    """A sentence per objective metric whose value never moved over every evaluation of every finished trial.

    Said only when some other validation metric did move (so the runs trained) and there were at least
    two evaluations.
    """
    histories = [
        TrialRecord.of(t).history
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    ]
    evaluations = [h for history in histories for h in history]
    out = []
    for objective in StudyRecord.of(study).objectives:
        metric = objective["metric"]
        values = [e[metric] for e in evaluations if isinstance(e.get(metric), (int, float))]
        if len(values) < 2 or max(values) - min(values) > CONSTANT:
            continue
        names = [k for k in dict.fromkeys(k for e in evaluations for k in e) if k not in _NOT_METRICS | {metric}]
        moving = {k: [e[k] for e in evaluations if isinstance(e.get(k), (int, float))] for k in names}  # once each
        moved = [k for k, vs in moving.items() if vs and max(vs) - min(vs) > CONSTANT]
        if moved:
            vs = moving[moved[0]]
            out.append(
                f"the objective {metric} is {values[0]:.6g} at every one of {len(values)} evaluations of "
                f"the finished trials while {moved[0]} moves ({min(vs):.6g} to {max(vs):.6g}): it cannot "
                "rank the trials. Either nothing is learned yet (train longer, try other learning rates) "
                "or the metric cannot see what is learned (labels it cannot read, e.g. tags seqeval does "
                "not know; a single class in validation)"
            )
    return out


def study_notes(study: optuna.Study) -> list[str]:
    """Every line a reader of this study's results must see: ``data: ...`` notes, then ``WARNING: ...``."""
    return [
        *(f"data: {note}" for note in StudyRecord.of(study).data_notes),
        *(f"WARNING: {note}" for note in constant_objectives(study)),
    ]

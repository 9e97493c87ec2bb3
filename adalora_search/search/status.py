"""What ``status`` shows of a stored study, read from storage alone (no torch).

``status_lines``: the summary table (``search/summary.py``), the counts and progress with an estimate of the
time left, the best trial's knobs and budget, running trials and every warning; ``status_data``: the same for
programs (``status --json``).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adalora_search.search import diagnostics, ranking
from adalora_search.search.record import StudyRecord, TrialRecord
from adalora_search.search.summary import summary_lines

BUDGET = "budget"  # study user attr: the last run's {n_trials, timeout}, for the estimate of the time left
TRIVIAL = "trivial"  # study user attr: the task's trivial predictor and its scores (Task.trivial)
SPLIT_SIZES = "split_sizes"  # study user attr: rows per split, so a difference can be said in examples
REFERENCE_RUNNING = "reference_running"  # study user attr: the reference run in training, {kind, since}; else null


def status_lines(study: optuna.Study) -> list[str]:
    """What ``status`` prints: counts and progress, the summary table, the best trial's knobs and budget,
    running trials, and every warning.
    """
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    lines = [
        f"study {study.study_name}: "
        + (", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) or "no trial yet")
    ]
    if (left := progress(study)) is not None:
        lines[0] += f" | {left}"
    if (phase := reference_phase(study)) is not None:
        lines[0] += f" | {phase}"
    best = ranking.best(study)
    if best is not None:
        lines += summary_lines(study)
        record = TrialRecord.of(best)
        params = record.trainable_params
        knobs = "; ".join(f"{k.split('.')[-1]} {_value(v)}" for k, v in sorted(best.params.items()))
        lines.append(f"best trial {best.number}: {knobs or 'no searched knob'}")
        lines.append(
            f"  budget: total rank {record.total_rank}, trainable params {params.get('initial', 0):,} at "
            f"the start -> {params.get('final', 0):,} after rank pruning"
        )
    lines += diagnostics.study_notes(study)
    lines += _compile_lines([TrialRecord.of(t) for t in study.get_trials(deepcopy=False)])
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (failure := TrialRecord.of(t).adapter_failure) is not None and t.number != getattr(best, "number", None):
            lines.append(f"WARNING: trial {t.number}'s adapter was not kept ({failure}); its results are stored")
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = TrialRecord.of(t)
        lines.append(
            f"running: trial {t.number} since {t.datetime_start:%H:%M:%S}, step {record.steps or 0} of "
            f"{record.total_steps or '?'}, worker {record.worker or '?'}"
        )
    return lines + _failed_and_queued(study)


def _compile_lines(records: list[TrialRecord]) -> list[str]:
    """Compiled trials (``training.compile``): how many, their compile time against their wall time, and each
    trial that fell back to eager with its reason.
    """
    compiled = [(r, r.timing["compile"]) for r in records if "compile" in r.timing]
    if not compiled:
        return []
    seconds = [c.get("compile_s", 0.0) for _, c in compiled]
    wall = sum(r.timing.get("wall_s") or 0.0 for r, _ in compiled)
    lines = [
        f"compiled trials: {len(compiled)}, compile time {sum(seconds):.0f} s of {wall:.0f} s trial wall time "
        f"(median {statistics.median(seconds):.1f} s per trial, at most "
        f"{max(c.get('graphs', 0) for _, c in compiled)} graphs per trial)"
    ]
    lines += [
        f"WARNING: trial {r.number} could not compile and ran eager: {c['fallback'][:160]}"
        for r, c in compiled
        if "fallback" in c
    ]
    return lines


def _failed_and_queued(study: optuna.Study, last: int = 3) -> list[str]:
    """The last failed trials with their reason, and the queued ones (a baseline, or a re-run of trial N)."""
    lines = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-last:]:
        failure = TrialRecord.of(t).failure or {"type": "lost", "message": "its worker stopped answering"}
        lines.append(f"failed: trial {t.number} ({failure['type']}: {failure['message'][:120]})")
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        why = (
            f"re-run of trial {t.user_attrs['retried_from']}"
            if "retried_from" in t.user_attrs
            else f"baseline {t.user_attrs['baseline']}"
            if "baseline" in t.user_attrs
            else f"warm start: {t.user_attrs['warm_start']}"
            if "warm_start" in t.user_attrs
            else "enqueued"
        )
        lines.append(f"queued: trial {t.number} ({why})")
    return lines


def reference_phase(study: optuna.Study) -> str | None:
    """``references: done lora; running pissa (3.2 min); to come dora, eva``, while the study file's reference runs
    are not all stored; None before any is planned or once all are done.
    """
    stored = StudyRecord.of(study)
    planned = stored.references_planned or []
    running = stored.reference_running if stored.reference_running is not None else {}
    done = [k for k in planned if k in stored.references]
    if not planned or len(done) == len(planned):
        return None
    parts = [f"done {', '.join(done)}"] if done else []
    if running.get("kind") in planned and running["kind"] not in done:
        parts.append(f"running {running['kind']} ({(time.time() - running.get('since', time.time())) / 60:.1f} min)")
    rest = [k for k in planned if k not in done and k != running.get("kind")]
    if rest:
        parts.append(f"to come {', '.join(rest)}")
    return "references: " + "; ".join(parts)


def progress(study: optuna.Study, now: float | None = None) -> str | None:
    """``elapsed 3.1 min, ~6.2 min left``: the time left from the optimizer steps done so far (finished trials
    and the running ones' last evaluation) against the steps of ``n_trials`` trials; None before a first
    evaluation or without an ``n_trials`` budget. Trial pruning ends trials early, so this is an upper bound.
    """
    n_trials = StudyRecord.of(study).budget.get("n_trials")
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    records = [TrialRecord.of(t) for t in trials]
    done = sum(r.steps or 0 for r in records if r.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    planned = [r.total_steps for r in records if r.total_steps]
    if not n_trials or not done or not planned:
        return None
    elapsed = busy_seconds(trials, now or time.time())
    finished = sum(r.state in (TrialState.COMPLETE, TrialState.PRUNED) for r in records)
    running = [r for r in records if r.state == TrialState.RUNNING]
    if finished >= n_trials:
        return f"all {n_trials} trials finished"
    still = max(n_trials - finished - len(running), 0) * sum(planned) / len(planned)
    left_steps = still + sum((r.total_steps or 0) - (r.steps or 0) for r in running)
    return f"elapsed {elapsed / 60:.1f} min, ~{elapsed / done * left_steps / 60:.1f} min left"


def busy_seconds(trials: list[FrozenTrial], now: float) -> float:
    """Seconds during which at least one of ``trials`` was running (the union of their intervals): a study
    resumed a day later does not count the day.
    """
    spans = sorted(
        (t.datetime_start.timestamp(), t.datetime_complete.timestamp() if t.datetime_complete else now)
        for t in trials
        if t.datetime_start is not None
    )
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        total += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return total


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def status_data(study: optuna.Study) -> dict[str, Any]:
    """What ``status --json`` prints: the study's name, trial counts by state, the best trial, one row per trial.

    States are Optuna's names (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``); ``values``
    are the objective values (null until a trial completes); ``steps`` the optimizer steps trained (a
    running trial: at its last evaluation); ``trainable_params`` has ``initial``, ``final`` (after rank
    pruning) and ``model_total`` (a running trial: from its start); ``failure`` is ``{type, message}`` for a
    failed trial; ``progress`` the time left (``progress``). Non-finite numbers are written as null.
    """
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    best = ranking.best(study)
    best_row = None
    if best is not None:
        record = TrialRecord.of(best)
        best_row = {
            "number": best.number,
            "values": best.values,
            "params": best.params,
            "metrics": record.metrics.get("final", {}),
            "trainable_params": record.trainable_params,
            "baseline": record.baseline,
            "warm_start": record.warm_start,
            "warnings": record.warnings,
        }
    stored = StudyRecord.of(study)
    data = {
        "study": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "objectives": stored.objectives or None,
        "counts": counts,
        "progress": progress(study),
        "references_phase": reference_phase(study),
        "best": best_row,
        "references": {k: ref.as_attr() for k, ref in stored.references.items()},
        "data_notes": stored.data_notes,
        "warnings": diagnostics.constant_objectives(study),
        "trials": [_row(t) for t in trials],
    }
    return _finite(data)


def _row(t: FrozenTrial) -> dict[str, Any]:
    record = TrialRecord.of(t)
    return {
        "number": t.number,
        "state": t.state.name,
        "values": t.values if t.state == TrialState.COMPLETE else None,  # a pruned trial's last report is no value
        "steps": record.steps,
        "total_steps": record.total_steps,
        "trainable_params": record.trainable_params,
        "failure": record.failure,
        "adapter_failure": record.adapter_failure,
        "baseline": record.baseline,
        "warm_start": record.warm_start,
        "worker": record.worker,
        "compile": record.timing.get("compile"),
    }


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so that it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

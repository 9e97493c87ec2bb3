"""What ``status`` and the end of ``run`` show of a stored study, read from storage alone (no torch).

``summary_lines``: the best trial, the baselines and the references side by side (validation and
test); ``status_lines``: that table, the counts and progress with an estimate of the time left, the
best trial's knobs and budget, running trials and every warning; ``status_data``: the same for
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
from adalora_search.search.record import ReferenceResult, StudyRecord, TrialRecord
from adalora_search.tasks import TASKS

BUDGET = "budget"  # study user attr: the last run's {n_trials, timeout}, for the estimate of the time left
TRIVIAL = "trivial"  # study user attr: the task's trivial predictor and its scores (Task.trivial)
SPLIT_SIZES = "split_sizes"  # study user attr: rows per split, so a difference can be said in examples
REFERENCE_RUNNING = "reference_running"  # study user attr: the reference run in training, {kind, since}; else null


def summary_lines(study: optuna.Study) -> list[str]:
    """Best trial vs baselines vs references, on validation and (when present) test: the table ``run`` ends
    with and ``status`` shows (read from the study's attrs alone).
    """
    best = ranking.best(study)
    if best is None:
        return ["no completed trial yet"]
    stored = StudyRecord.of(study)
    task = TASKS[stored.task]
    objective = stored.objective_metrics(task.main_metric)[0]
    metrics = list(
        dict.fromkeys([task.main_metric if objective == "trainable_params" else objective, task.main_metric])
    )
    records = [TrialRecord.of(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best_record = TrialRecord.of(best)
    label = f"best trial {best.number}" + (
        f" = baseline {best_record.baseline}"
        if best_record.baseline
        else f" = warm start {best_record.warm_start}"
        if best_record.warm_start
        else ""
    )
    rows: list[tuple[str, TrialRecord | ReferenceResult]] = [(label, best_record)]
    rows += [
        (f"baseline {r.baseline} (trial {r.number})", r)
        for r in records
        if r.baseline is not None and r.number != best.number
    ]
    rows += [(f"reference {k}", ref) for k, ref in stored.references.items() if ref.trained]
    if stored.trivial is not None:  # the floor: what predicting without the input scores
        floor = stored.trivial
        rows.append(
            (
                f"trivial: {floor['label']}"[:39],
                ReferenceResult(metrics={"final": floor.get("validation", {}), "test": floor.get("test", {})}),
            )
        )
    head = "".join(f" {'val ' + m:>16s} {'test ' + m:>16s}" for m in metrics)
    lines = [f"{'run':40s}{head} {'trainable':>10s}"]
    best_test = best_record.metric("test", metrics[0])
    for label, row in rows:
        cells = "".join(f" {_fmt(row.metric('final', m)):>16s} {_fmt(row.metric('test', m)):>16s}" for m in metrics)
        share = row.trainable_params
        frac = share.get("final", 0) / max(share.get("model_total", 1), 1)
        test = row.metric("test", metrics[0])
        gain = (
            ""
            if label.startswith("best") or test is None or best_test is None
            else f"  (best trial {_gain(metrics[0], best_test, test)})"
        )
        lines.append(f"{label:40s}{cells} {100 * frac:9.2f}%{gain}")
        lines += [f"  WARNING: {note}" for note in row.warnings]
    lines += verdicts(best_record, stored, metrics[0])
    lines += trivial_lines(best_record, stored, metrics[0])
    return lines + warm_start_lines(study, best.number)


def trivial_lines(best: TrialRecord, stored: StudyRecord, metric: str) -> list[str]:
    """The validation split's class shares (what 'accuracy 0.72' is read against), and a warning when the best
    trial does not beat the trivial predictor on validation.
    """
    floor = stored.trivial
    if floor is None:
        return []
    lines = []
    if shares := floor.get("shares"):
        lines.append("validation classes: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in list(shares.items())[:8]))
    mine, theirs = best.metric("final", metric), (floor.get("validation", {})).get(metric)
    lower = metric in ("eval_loss", "perplexity")
    if mine is not None and theirs is not None and (mine >= theirs if lower else mine <= theirs):
        lines.append(
            f"WARNING: the best trial's validation {metric} ({mine:.4f}) does not beat the trivial predictor's "
            f"({floor['label']}: {theirs:.4f}): the search found nothing that uses the input"
        )
    return lines


def verdicts(best: TrialRecord, stored: StudyRecord, metric: str) -> list[str]:
    """One sentence per trained reference: is the best trial ahead or behind it, on validation and on test, by how
    much (in examples where the metric counts them), and is that within the evaluation's resolution.
    """
    lines, counted = [], metric in TASKS[stored.task].per_example
    for kind, ref in stored.references.items():
        parts = [
            _verdict(metric, b, r, stored.split_sizes.get(split) if counted else None, split)
            for split, key in (("validation", "final"), ("test", "test"))
            if (b := best.metric(key, metric)) is not None and (r := ref.metric(key, metric)) is not None
        ]
        if ref.trained and parts:
            lines.append(f"best trial vs {kind}: " + "; ".join(parts))
    return lines


def _verdict(metric: str, best: float, other: float, n: int | None, split: str) -> str:
    lower = metric in ("eval_loss", "perplexity")
    diff = best - other
    if n:  # a metric counted in whole examples of the split
        examples = round(abs(diff) * n)
        if examples == 0:
            return f"level on {split} (within one of its {n} examples)"
        way = "ahead" if diff > 0 else "behind"
        return f"{way} on {split} by {100 * abs(diff):.1f} pt ({examples} of {n} examples)"
    if abs(diff) < 1e-12:
        return f"level on {split}"
    way = "ahead" if (diff < 0 if lower else diff > 0) else "behind"
    size = f"{abs(diff):.3f}" if lower else f"{100 * abs(diff):.1f} pt"
    return f"{way} on {split} by {size} {metric}"


def warm_start_lines(study: optuna.Study, best: int | None) -> list[str]:
    """Which trials the warm start enqueued (``study.warm_start``), and whether the best trial is one of them."""
    warm = [  # a failed one was re-queued (or counts no more): its re-run stands for it
        t for t in study.get_trials(deepcopy=False) if "warm_start" in t.user_attrs and t.state != TrialState.FAIL
    ]
    if not warm:
        return []
    origins = "; ".join(f"trial {t.number}: {t.user_attrs['warm_start']}" for t in warm)
    verdict = (
        "the best trial is one of them"
        if any(t.number == best for t in warm)
        else "the search found a better one"
        if best is not None
        else "none completed yet"
    )
    return [f"warm start ({len(warm)} trials run first): {origins}; {verdict}"]


def _gain(metric: str, best: float, other: float) -> str:
    """Points for scores in [0, 1]; a plain difference for losses and perplexity."""
    if metric in ("eval_loss", "perplexity"):  # lower is better: say which way, not a signed delta
        return f"{abs(best - other):.3f} {'lower' if best < other else 'higher'} {metric}"
    return f"{100 * (best - other):+.1f} pt"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


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

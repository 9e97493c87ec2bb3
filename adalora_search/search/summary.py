"""The summary a study ends with (the end of ``run``, ``status``, the report's headline, the model card), read from
storage alone: the best trial, the baselines, the references and the task's trivial predictor side by side on
validation and test; one verdict per reference (ahead, behind or level, in examples where the metric counts them);
the validation class shares; the warm-start trials.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from adalora_search.search import ranking
from adalora_search.search.record import ReferenceResult, StudyRecord, TrialRecord
from adalora_search.tasks import TASKS


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

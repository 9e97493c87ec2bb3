"""After the search: reference runs (uniform LoRA, full fine-tuning) and the summary of gains.

References are trained once per study with the best trial's settings (a reference may name its
own learning rates, a ``lora`` one defaults to ``LORA_LEARNING_RATES``: each is trained and the
best on validation kept; ``retrain`` chooses its rate the same way) and stored in the study's
user attrs under ``references``, so the report can show what adaptive allocation bought.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import replace

import optuna

from adalora_search.results.export import lora_patterns
from adalora_search.search import diagnostics, status
from adalora_search.search.objective import TRIAL_ERRORS
from adalora_search.search.record import ReferenceResult, StudyRecord, TrialRecord, TriedRate
from adalora_search.search.runner import best_trial
from adalora_search.search.summary import summary_lines
from adalora_search.study.space import LoraKnobs, TrialConfig, trial_config
from adalora_search.study.spec import Reference, StudySpec
from adalora_search.tasks import Task, get_task
from adalora_search.train.data import TokenizedData
from adalora_search.train.engine import TrialRun
from adalora_search.train.methods import METHODS

_log = logging.getLogger(__name__)
REFERENCE_RUNNING = status.REFERENCE_RUNNING  # study attr: the reference being trained, {kind, since}


def reference_config(cfg: TrialConfig, ref: Reference, ranks: dict[str, int], lr: float | None) -> TrialConfig:
    """The best trial's config turned into a reference run (uniform LoRA at its final budget, full, zero-shot)."""
    training = cfg.training.model_copy(
        update={k: v for k, v in (("learning_rate", lr), ("epochs", ref.epochs)) if v is not None}
    )
    if ref.kind in ("full", "zero_shot"):
        return cfg.model_copy(update={"method": "full" if ref.kind == "full" else "none", "training": training})
    r = max(1, round(sum(ranks.values()) / max(len(ranks), 1)))
    uniform, alphas = lora_patterns({n: r for n in ranks}, cfg.adalora.lora_alpha, cfg.adalora.init_r)
    init = ref.kind if ref.kind in ("pissa", "eva") else "default"
    lora = LoraKnobs(rank_pattern=uniform, alpha_pattern=alphas, init=init, use_dora=ref.kind == "dora")
    return cfg.model_copy(update={"method": "lora", "lora": lora, "training": training})


def train_reference(cfg: TrialConfig, data: TokenizedData) -> ReferenceResult:
    """Train (or, zero-shot, only evaluate) one run; its metrics, or its ``failure`` (a diverged rate)."""
    try:
        run = TrialRun(cfg, data)
        if not METHODS[cfg.method].trains:  # zero-shot: the base model as it is
            run.result.metrics["final"] = run.evaluate("validation", final=True)
        else:
            run.train()
        test = run.evaluate("test", final=True) if "test" in data.splits else None
    except TRIAL_ERRORS as exc:
        return ReferenceResult(failure=f"{type(exc).__name__}: {exc}", learning_rate=cfg.training.learning_rate)
    final = run.result.metrics.get("final", {})
    chance = run.task.chance_note(final, data.splits["validation"], data.label_names) if final else None
    return ReferenceResult.of(
        {
            "metrics": {**run.result.metrics, "test": test},
            "trainable_params": run.result.trainable_params,
            "timing": run.result.timing,
            "learning_rate": cfg.training.learning_rate,
            "warnings": [chance] if chance else [],
            # EVA's ranks moved between matrices: the report sets them beside AdaLoRA's allocation
            "rank_allocation": run.result.rank_allocation if cfg.lora is not None and cfg.lora.init == "eva" else {},
        }
    )


def pick_best(results: list[ReferenceResult], task: Task) -> ReferenceResult:
    """The result with the best final validation main metric (failures last), a tie broken by the lower validation
    ``eval_loss`` (not by the order tried: two rates that both predict one class tie on accuracy), with ``tried``
    filled in: each rate with its validation main metric (None when it failed) and failure.
    """
    metric = task.main_metric
    best: ReferenceResult | None = None
    for result in results:
        value = result.metric("final", metric)
        if value is None:
            continue
        held = best.metric("final", metric) if best is not None else None
        tie = held is not None and value == held and metric != "eval_loss"
        loss, held_loss = result.metric("final", "eval_loss"), best.metric("final", "eval_loss") if best else None
        if (
            best is None
            or task.is_better(metric, value, held)
            or (tie and loss is not None and held_loss is not None and loss < held_loss)
        ):
            best = result
    tried = [TriedRate(r.learning_rate, r.metric("final", metric), r.failure) for r in results]
    return replace(best or results[0], tried=tried)


def run_references(spec: StudySpec, study: optuna.Study, data: TokenizedData) -> dict[str, ReferenceResult]:
    """Train each ``study.references`` run once (stored in the study attr ``references``); returns them all.

    Several learning rates (a ``lora`` reference's default: ``LORA_LEARNING_RATES``) are each
    trained and the best on validation is kept, with every rate tried under ``tried``.
    """
    stored = StudyRecord.of(study).references
    best = best_trial(study)
    record = TrialRecord.of(best) if best is not None else None
    if record is None or not record.rank_allocation:
        return stored
    with warnings.catch_warnings():  # a baseline's value may lie outside the searched range: it was run as given
        warnings.filterwarnings("ignore", message=".*out of the range", category=UserWarning)
        cfg = trial_config(spec, optuna.trial.FixedTrial(record.params), record.baseline)
    task = get_task(spec.model.task)
    try:
        for ref in spec.study.references:
            if ref.kind in stored:
                continue
            study.set_user_attr(REFERENCE_RUNNING, {"kind": ref.kind, "since": time.time()})  # status shows the phase
            results = []
            for lr in ref.learning_rates:
                _log.info(
                    f"[reference {ref.kind}] the base model as it is, on the best trial's ({best.number}) data"
                    if ref.kind == "zero_shot"
                    else f"[reference {ref.kind}] with the best trial's ({best.number}) "
                    f"settings, learning rate {lr or cfg.training.learning_rate:g}"
                )
                results.append(train_reference(reference_config(cfg, ref, record.rank_allocation, lr), data))
            stored[ref.kind] = replace(pick_best(results, task), of_trial=best.number)
            study.set_user_attr("references", {kind: result.as_attr() for kind, result in stored.items()})
    finally:  # also when a run is interrupted: status must not show it running for ever
        study.set_user_attr(REFERENCE_RUNNING, None)
    return stored


def finish_study(spec: StudySpec, study: optuna.Study, data: TokenizedData) -> list[str]:
    """References (once), then the summary lines ``run`` prints, and what the results cannot be trusted for."""
    if spec.study.references:
        run_references(spec, study, data)
    return summary_lines(study) + diagnostics.study_notes(study)

"""What the CLI verbs do with a study file or a stored study (kept apart from click for tests)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from adalora_search.errors import UserError
from adalora_search.search import artifacts, diagnostics
from adalora_search.search import storage as storage_mod
from adalora_search.search.record import TrialRecord
from adalora_search.search.runner import (
    Budget,
    best_trial,
    open_study,
    prepare_data,
    work,
)
from adalora_search.search.workers import spawn_workers, worker_slots
from adalora_search.study.loader import load_spec, located
from adalora_search.study.spec import StudySpec
from adalora_search.train.data import TokenizedData

_log = logging.getLogger(__name__)


def storage_url(spec: StudySpec, study_file: str, override: str | None) -> str:
    """--storage, else study.storage, else ``<study file stem>.db`` beside the file; checked, never leaked."""
    if override:
        storage_mod.check_url(override, "--storage")
    return override or spec.study.storage or storage_mod.default_url(study_file, spec.study.name)


def artifact_store(spec: StudySpec, study_file: str) -> str:
    """Where kept adapters go: ``study.artifact_store``, else ``<study file dir>/<name>_artifacts``."""
    return spec.study.artifact_store or artifacts.default_location(study_file, spec.study.name)


def _budget(spec: StudySpec, n_trials: int | None, timeout: float | None) -> Budget:
    budget = Budget(n_trials or spec.study.n_trials, timeout or spec.study.timeout)
    if budget.n_trials is None and budget.timeout is None:
        raise UserError("study.n_trials: neither n_trials nor timeout is set; add study.n_trials to the "
                        "file or pass --n-trials / --timeout")
    return budget


def run_session(study_file: str, n_trials: int | None, timeout: float | None, storage: str | None,
                workers: int, gpus: list[str], allow_changed: bool = False, workers_per_gpu: int = 1) -> list[str]:
    """Validate everything, create/resume the study, run the trials, then the reference runs.

    Returns the summary (best trial, baselines and references side by side) and the next commands.
    """
    from adalora_search.results.references import finish_study

    slots = worker_slots(workers, gpus, workers_per_gpu)
    spec = load_spec(study_file)
    budget = _budget(spec, n_trials, timeout)
    url = storage_url(spec, study_file, storage)
    data, _ = check_inputs(spec, study_file)  # data and model problems are reported before any storage is touched
    study = open_study(spec, url, allow_changed)
    _log.info(f"study {spec.study.name!r} in {storage_mod.mask(url)}: {len(study.trials)} trials stored")
    for note in data.notes():
        _log.info(f"data: {note}")
    if len(slots) > 1 or slots[0] is not None:
        code = spawn_workers(study_file, url, budget, slots, allow_changed)
        if code != 0:
            raise UserError(f"a worker exited with code {code} (its message is above); the study stopped before "
                            "the reference runs; fix the cause and `run` again to resume")
    else:
        work(spec, url, budget, artifact_store(spec, study_file), data=data, allow_changed=allow_changed, study=study)
    return [*finish_study(spec, study, data), f"report: adalora-search report {study_file}",
            f"export: adalora-search export {study_file} --out DIR"]


def check_model(spec: StudySpec, data: TokenizedData) -> dict[str, tuple[int, int]]:
    """Inspect the model (meta device) and refuse what would fail every trial; returns its Linears."""
    from adalora_search.train import model_checks, modeling

    linears, config = modeling.inspect(spec.model, data.label_names)
    model_checks.check_model(spec, linears, config, data.label_names)
    return linears


def check_inputs(spec: StudySpec, study_file: str) -> tuple[TokenizedData, dict[str, tuple[int, int]]]:
    """Load the data and inspect the model (what ``validate`` and ``run`` do before trial 0).

    Raises:
        UserError: the data or the model cannot be used; problems located at their line of ``study_file``.
    """
    try:
        data = prepare_data(spec)
        return data, check_model(spec, data)
    except UserError as exc:
        raise located(exc, study_file) from None


def run_worker(study_file: str, n_trials: int | None, timeout: float | None, storage: str | None,
               allow_changed: bool = False) -> None:
    """One worker on a study that ``run`` (or another worker) may already have created."""
    spec = load_spec(study_file)
    work(spec, storage_url(spec, study_file, storage), _budget(spec, n_trials, timeout),
         artifact_store(spec, study_file), allow_changed=allow_changed)


def locate(study_file: str | None, storage: str | None, study_name: str | None) -> optuna.Study:
    """A stored study, from a study file or from --storage and --study; never creates storage."""
    if study_file:
        spec = load_spec(study_file)
        url, name = storage_url(spec, study_file, storage), study_name or spec.study.name
    elif storage and study_name:
        url, name = storage, study_name
    else:
        raise UserError("name a STUDY_FILE, or both --storage URL and --study NAME")
    if "://" not in url:
        raise UserError(f"--storage = {storage_mod.mask(url)!r}: not a SQLAlchemy URL; e.g. sqlite:///study.db")
    storage_mod.check_url(url, "--storage" if storage else "study.storage")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        raise UserError(f"no study storage at {storage_mod.mask(url)}; run the study first")
    backend = storage_mod.open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise UserError(f"--study = {name!r}: no such study in {storage_mod.mask(url)}; stored: {names}") from None


def status_lines(study: optuna.Study) -> list[str]:
    """What ``status`` prints: counts by state, the best trial with its budget, running trials."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    lines = [f"study {study.study_name}: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))]
    best = best_trial(study)
    if best is not None:
        record = TrialRecord.of(best)
        metrics = record.metrics.get("final", {})
        params = record.trainable_params
        lines.append(f"best trial {best.number}: values {best.values} "
                     f"{ {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)} }")
        lines.append(f"  budget: total rank {record.total_rank}, "
                     f"trainable params {params.get('initial')} -> {params.get('final')}")
        lines += [f"  WARNING: {note}" for note in record.warnings]
    lines += diagnostics.study_notes(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (failure := TrialRecord.of(t).adapter_failure) is not None and t.number != getattr(best, "number", None):
            lines.append(f"WARNING: trial {t.number}'s adapter was not kept ({failure}); its results are stored")
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lines.append(f"running: trial {t.number} since {t.datetime_start:%H:%M:%S}, "
                     f"last step {t.last_step}, worker {TrialRecord.of(t).worker or '?'}")
    return lines


def status_data(study: optuna.Study) -> dict[str, Any]:
    """What ``status --json`` prints: the study's name, trial counts by state, the best trial, one row per trial.

    States are Optuna's names (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``); ``values``
    are the objective values (null until a trial completes); ``steps`` the optimizer steps trained;
    ``trainable_params`` has ``initial``, ``final`` (after rank pruning) and ``model_total``;
    ``failure`` is ``{type, message}`` for a failed trial. Non-finite numbers are written as null.
    """
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    best = best_trial(study)
    best_row = None
    if best is not None:
        record = TrialRecord.of(best)
        best_row = {"number": best.number, "values": best.values, "params": best.params,
                    "metrics": record.metrics.get("final", {}), "trainable_params": record.trainable_params,
                    "baseline": record.baseline, "warnings": record.warnings}
    rows = []
    for t in trials:
        record = TrialRecord.of(t)
        rows.append({"number": t.number, "state": t.state.name, "values": t.values, "steps": record.steps,
                     "total_steps": record.total_steps, "trainable_params": record.trainable_params,
                     "failure": record.failure, "adapter_failure": record.adapter_failure,
                     "baseline": record.baseline, "worker": record.worker})
    data = {"study": study.study_name, "directions": [d.name.lower() for d in study.directions],
            "objectives": study.user_attrs.get("objectives"), "counts": counts, "best": best_row,
            "data_notes": study.user_attrs.get(diagnostics.DATA_NOTES) or [],
            "warnings": diagnostics.constant_objectives(study), "trials": rows}
    return _finite(data)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so that it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

"""The verbs' orchestration over a study (a file, or a spec built in Python) or a stored study: what the
Python API (``adalora_search.api``) and the command line run.

A spec read from a file keeps its path (``StudySpec.study_file``): the default storage, artifact store
and report folder are beside it. A spec built in Python has them in the working directory, named
after ``study.name`` (``<name>.db``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import optuna
from sqlalchemy.engine import make_url

from adalora_search.errors import UserError
from adalora_search.search import artifacts
from adalora_search.search import storage as storage_mod
from adalora_search.study.loader import load_spec, located
from adalora_search.study.samplers import random_search_note
from adalora_search.study.spec import StudySpec
from adalora_search.urls import check_url, mask

if TYPE_CHECKING:  # the training stack (torch, transformers) is imported by the verbs that train, not by status
    from adalora_search.search.runner import Budget
    from adalora_search.train.data import TokenizedData

_log = logging.getLogger(__name__)

Study = Union[str, "os.PathLike[str]", StudySpec]  # a study file, or a spec (read from one or built in Python)


def resolve(study: Study) -> tuple[StudySpec, str]:
    """The spec, and the study file its defaults are relative to (``<cwd>/<study.name>.yaml`` for a spec
    built in Python, which need not exist).

    Raises:
        UserError: the study file cannot be read or has problems (all of them listed).
    """
    if isinstance(study, StudySpec):
        return study, str(study.study_file or Path.cwd() / f"{study.study.name}.yaml")
    if not isinstance(study, (str, os.PathLike)):
        raise UserError(
            f"study: a study file's path or a StudySpec, but got a {type(study).__name__}; "
            + (
                "turn a dict into a spec with adalora_search.load_study_spec(...) first"
                if isinstance(study, dict)
                else "pass the path of a study YAML file, or load_study_spec(...)'s result"
            )
        )
    return load_spec(study), os.fspath(study)


def storage_url(spec: StudySpec, study_file: str, override: str | None) -> str:
    """--storage, else study.storage, else ``<study file stem>.db`` beside the file; checked, never leaked."""
    if override:
        check_url(override, "--storage")
    return override or spec.study.storage or storage_mod.default_url(study_file, spec.study.name)


def artifact_store(spec: StudySpec, study_file: str) -> str:
    """Where kept adapters go: ``study.artifact_store``, else ``<study file dir>/<name>_artifacts``."""
    return spec.study.artifact_store or artifacts.default_location(study_file, spec.study.name)


def _budget(spec: StudySpec, n_trials: int | None, timeout: float | None) -> Budget:
    from adalora_search.search.runner import Budget

    budget = Budget(n_trials or spec.study.n_trials, timeout or spec.study.timeout)
    if budget.n_trials is None and budget.timeout is None:
        raise UserError(
            "study.n_trials: neither n_trials nor timeout is set; add study.n_trials to the "
            "file or pass --n-trials / --timeout"
        )
    return budget


def run_session(
    study: Study,
    n_trials: int | None,
    timeout: float | None,
    storage: str | None,
    workers: int,
    gpus: list[str],
    allow_changed: bool = False,
    workers_per_gpu: int = 1,
    gpus_per_trial: int = 1,
) -> tuple[optuna.Study, list[str]]:
    """Validate everything, create/resume the study, run the trials, then the reference runs.

    Returns the stored study, and the summary (best trial, baselines and references side by side) with
    the next commands.

    Raises:
        UserError: bad input (exit 2 on the command line); several workers for a spec built in Python.
    """
    from adalora_search.results.references import finish_study
    from adalora_search.search import warm_start
    from adalora_search.search.runner import interrupts_raise, open_study, work
    from adalora_search.search.workers import spawn_workers, worker_slots

    slots = worker_slots(workers, gpus, workers_per_gpu, gpus_per_trial)
    spec, study_file = resolve(study)
    processes = trial_processes(spec, gpus_per_trial)
    if (len(slots) > 1 or slots[0] is not None) and (not Path(study_file).is_file() or spec != load_spec(study_file)):
        raise UserError(
            "workers: worker processes read the study from its file, and this spec was built or "
            "changed in Python; save it as YAML and run that file, or run with one worker and no gpus"
        )
    budget = _budget(spec, n_trials, timeout)
    url = storage_url(spec, study_file, storage)
    storage_mod.check_reachable_here(url, "--storage" if storage else "study.storage")
    data, _ = check_inputs(spec, study_file)  # data and model problems are reported before any storage is touched
    warm = spec.study.warm_start is not None and not warm_start_enqueued(url, spec.study.name)
    planned = warm_start.plan(spec) if warm else []  # a warm start that cannot work is refused before storage
    study = open_study(spec, url, allow_changed)
    _log.info(f"study {spec.study.name!r} in {mask(url)}: {stored_line(study)}")
    enqueued = len(spec.baselines) + len(planned)
    if note := random_search_note(spec.study.sampler, budget.n_trials, enqueued):
        _log.warning(note)
    for note in data.notes():
        _log.info(f"data: {note}")
    if len(slots) > 1 or slots[0] is not None:
        code = spawn_workers(study_file, url, budget, slots, allow_changed, gpus_per_trial)
        if code != 0:
            raise UserError(
                f"a worker exited with code {code} (its message is above); the study stopped before "
                "the reference runs; fix the cause and `run` again to resume"
            )
    else:
        work(
            spec,
            url,
            budget,
            artifact_store(spec, study_file),
            data=data,
            allow_changed=allow_changed,
            study=study,
            processes=processes,
        )
    then = [f"report: adalora-search report {study_file}", f"export: adalora-search export {study_file} --out DIR"]
    with interrupts_raise():  # SIGTERM (Slurm, docker stop) during a reference run stops it as it stops a trial
        summary = finish_study(spec, study, data)
    return study, [*summary, *(then if spec.study_file is not None else [])]


def warm_start_enqueued(url: str, name: str) -> bool:
    """The stored study already enqueued its warm start (a resumed run needs the earlier study no more)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return False  # a new study: nothing stored yet (and nothing created here)
    try:
        study = optuna.load_study(study_name=name, storage=storage_mod.open_storage(url))
    except (KeyError, UserError):
        return False
    from adalora_search.search.warm_start import ENQUEUED

    return bool(study.user_attrs.get(ENQUEUED))


def trial_processes(spec: StudySpec, gpus_per_trial: int) -> int:
    """The processes each trial runs on with ``--gpus-per-trial``: that many (data parallel), or one that
    places the model across the GPUs (``model.device_map``).

    Raises:
        UserError: the batch does not split evenly over the processes; a quantized model (not verified).
    """
    processes = gpus_per_trial
    if processes < 2 or spec.model.device_map is not None:
        return 1
    if spec.training.batch_size % processes:
        raise UserError(
            f"training.batch_size = {spec.training.batch_size}: --gpus-per-trial {processes} splits each "
            f"batch over {processes} processes; make batch_size a multiple of {processes}"
        )
    if spec.model.quantization != "none":
        raise UserError(
            f"model.quantization = {spec.model.quantization!r}: a quantized model on several processes "
            "per trial is not verified here; use --gpus-per-trial 1 (or model.device_map: auto)"
        )
    if spec.training.compile is not False:
        raise UserError(
            "training.compile: a compiled trial on several processes is not verified here (a rank that falls "
            "back to eager would leave the others' collectives); set compile: false or --gpus-per-trial 1"
        )
    import torch

    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise UserError(
            f"--gpus-per-trial = {processes}: this worker sees {torch.cuda.device_count()} GPUs "
            "(CUDA_VISIBLE_DEVICES); give each worker that many, or a smaller --gpus-per-trial"
        )
    return processes


def stored_line(study: optuna.Study) -> str:
    """``3 trials stored, 2 baselines queued (a, b)``: what a run starts from (queued trials have not run yet)."""
    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    baselines = [
        t.user_attrs["baseline"] for t in waiting if "baseline" in t.user_attrs and "retried_from" not in t.user_attrs
    ]
    parts = [f"{_count(len(trials) - len(waiting), 'trial')} stored" if len(trials) > len(waiting) else "new study"]
    warm = [t for t in waiting if "warm_start" in t.user_attrs and "retried_from" not in t.user_attrs]
    parts += [f"{_count(len(baselines), 'baseline')} queued ({', '.join(baselines)})"] if baselines else []
    parts += [f"{_count(len(warm), 'warm-start trial')} queued"] if warm else []
    rest = len(waiting) - len(baselines) - len(warm)
    parts += [f"{_count(rest, 'trial')} re-queued"] if rest > 0 else []
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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
    from adalora_search.search.runner import prepare_data

    try:
        data = prepare_data(spec)
        return data, check_model(spec, data)
    except UserError as exc:
        raise located(exc, study_file) from None


def run_worker(
    study_file: str,
    n_trials: int | None,
    timeout: float | None,
    storage: str | None,
    allow_changed: bool = False,
    gpus_per_trial: int = 1,
) -> None:
    """One worker on a study that ``run`` (or another worker) may already have created; each of its trials
    on ``gpus_per_trial`` processes (the GPUs in ``CUDA_VISIBLE_DEVICES``, or the CPU).
    """
    from adalora_search.search.runner import work

    spec = load_spec(study_file)
    processes = trial_processes(spec, gpus_per_trial)
    work(
        spec,
        storage_url(spec, study_file, storage),
        _budget(spec, n_trials, timeout),
        artifact_store(spec, study_file),
        allow_changed=allow_changed,
        processes=processes,
    )


def locate(study: Study | None, storage: str | None, study_name: str | None) -> optuna.Study:
    """A stored study, from a study file (or spec) or from --storage and --study; never creates storage."""
    if study is not None and (not isinstance(study, str) or study):
        spec, study_file = resolve(study)
        url, name = storage_url(spec, study_file, storage), study_name or spec.study.name
    elif storage and study_name:
        url, name = storage, study_name
    else:
        raise UserError("name a STUDY_FILE, or both --storage URL and --study NAME")
    if "://" not in url:
        raise UserError(f"--storage = {mask(url)!r}: not a SQLAlchemy URL; e.g. sqlite:///study.db")
    check_url(url, "--storage" if storage else "study.storage")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        raise UserError(f"no study storage at {mask(url)}; run the study first")
    backend = storage_mod.open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise UserError(f"--study = {name!r}: no such study in {mask(url)}; stored: {names}") from None

"""Create or resume a study and run trials on it: one process, K local workers, or many machines.

Each worker loops: fail stale trials -> claim a trial under the storage lock (only while the
study has fewer than n_trials finished-or-running trials) -> run it with a heartbeat -> tell.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from adalora_search import ranking
from adalora_search import storage as storage_mod
from adalora_search.data import TokenizedData, load_tokenized
from adalora_search.errors import UserError
from adalora_search.modeling import load_tokenizer
from adalora_search.objective import TRIAL_ERRORS, Objective
from adalora_search.samplers import Grid
from adalora_search.space import enqueue_params, grid_search_space, optimizer_steps
from adalora_search.spec import StudySpec
from adalora_search.tasks import get_task


@dataclass(frozen=True)
class Budget:
    """When to stop claiming trials: a shared finished-trial total and/or a wall-clock limit."""

    n_trials: int | None
    timeout: float | None


def build_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    root = spec.study.sampler.root
    if isinstance(root, Grid):
        return optuna.samplers.GridSampler(grid_search_space(spec), seed=root.seed)
    return root.build()


def open_study(spec: StudySpec, url: str) -> optuna.Study:
    """Create the study (enqueueing baselines exactly once) or load it if it exists."""
    storage = storage_mod.open_storage(url, spec.study.heartbeat_interval, spec.study.max_retry)
    directions = [o.direction for o in spec.study.objectives]
    kwargs: dict[str, Any] = {"storage": storage, "study_name": spec.study.name,
                              "sampler": build_sampler(spec), "pruner": spec.study.pruner.root.build()}
    try:
        study = optuna.create_study(directions=directions, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise UserError(f"study.objective: the stored study {spec.study.name!r} has directions "
                            f"{[d.name.lower() for d in study.directions]}; rename the study to change them")
    with storage_mod.claim_lock(url):  # workers starting together: exactly one enqueues the baselines
        if not study.user_attrs.get("baselines_enqueued"):
            for baseline in spec.baselines:
                study.enqueue_trial(enqueue_params(spec, baseline.params), user_attrs={"baseline": baseline.name},
                                    skip_if_exists=True)
            study.set_user_attr("baselines_enqueued", True)
            study.set_user_attr("objectives", [o.model_dump() for o in spec.study.objectives])
            study.set_user_attr("task", spec.model.task)
    return study


def prepare_data(spec: StudySpec) -> TokenizedData:
    """Load and tokenize once (cached on disk for every trial and worker); data errors surface here."""
    from adalora_search import rules

    tokenizer = load_tokenizer(spec.model)
    data = load_tokenized(spec.data, tokenizer, get_task(spec.model.task))
    problems = rules.check_total_steps(spec, optimizer_steps(spec.training, len(data.splits["train"])))
    if problems:
        raise UserError(f"{len(problems)} problem(s) once the data is known", problems)
    return data


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _claim(study: optuna.Study, url: str, budget: Budget, deadline: float | None) -> optuna.Trial | None:
    """Ask for a trial unless the study already has enough finished or running trials."""
    if deadline is not None and time.time() >= deadline:
        return None
    optuna.storages.fail_stale_trials(study)
    with storage_mod.claim_lock(url):
        counts = _counts(study)
        taken = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.RUNNING]
        if budget.n_trials is not None and taken >= budget.n_trials:
            return None
        with warnings.catch_warnings():  # we run the heartbeat ourselves (storage.Heartbeat)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            return study.ask()


def work(spec: StudySpec, url: str, budget: Budget, artifacts_dir: Path, log=print,
         data: TokenizedData | None = None) -> int:
    """One worker: claim and run trials until the budget is spent; returns trials run here."""
    data = data if data is not None else prepare_data(spec)
    study = open_study(spec, url)
    objective = Objective(spec, data, artifacts_dir, log)
    deadline = time.time() + budget.timeout if budget.timeout else None
    ran = 0
    _sigterm_as_interrupt()
    while (trial := _claim(study, url, budget, deadline)) is not None:
        ran += 1
        _run_one(study, trial, objective, spec, log)
        log(progress_line(study, budget, deadline))
    return ran


def _run_one(study: optuna.Study, trial: optuna.Trial, objective: Objective, spec: StudySpec, log) -> None:
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    with storage_mod.Heartbeat(study._storage, trial._trial_id, spec.study.heartbeat_interval):
        try:
            values = objective(trial)
        except optuna.TrialPruned as exc:
            study.tell(trial, state=TrialState.PRUNED)
            log(f"[trial {trial.number}] trial pruned: {exc}")
            return
        except TRIAL_ERRORS as exc:
            study.tell(trial, state=TrialState.FAIL)
            log(f"[trial {trial.number}] FAILED ({type(exc).__name__}): {exc}")
            return
        except KeyboardInterrupt:
            trial.set_user_attr("failure", {"type": "Interrupted", "message": "stopped by SIGINT/SIGTERM"})
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs=_retry_attrs(trial))
            log(f"[trial {trial.number}] interrupted: marked FAIL and re-queued; `run` again to resume")
            raise
    study.tell(trial, values)


def _retry_attrs(trial: optuna.Trial) -> dict[str, Any]:
    attrs = {"retried_from": trial.number}
    if "baseline" in trial.user_attrs:
        attrs["baseline"] = trial.user_attrs["baseline"]
    return attrs


def _sigterm_as_interrupt() -> None:
    """SIGINT and SIGTERM stop the worker cleanly (also when started with SIGINT ignored, e.g. by `&`)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, handler)


def progress_line(study: optuna.Study, budget: Budget, deadline: float | None) -> str:
    counts = _counts(study)
    done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    line = (f"[study {study.study_name}] {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} "
            f"pruned, {counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running")
    best = best_trial(study)
    if best is not None:
        line += f" | best {best.values[0]:.4f} (trial {best.number})"
    started = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start]
    if started:
        elapsed = time.time() - min(started).timestamp()
        line += f" | elapsed {elapsed / 60:.1f} min"
        if budget.n_trials and done:
            line += f", ~{elapsed / done * max(budget.n_trials - done, 0) / 60:.1f} min left"
    return line


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best trial as status, report, export and references see it (``ranking.best``)."""
    return ranking.best(study)


def spawn_workers(study_file: str, url: str, budget: Budget, workers: int, gpus: list[str]) -> int:
    """Start one worker process per slot (per GPU when ``gpus``); returns the worst exit code."""
    slots = gpus or [None] * workers
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    procs = []
    for gpu in slots:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), ADALORA_SEARCH_THREADS=str(threads))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        cmd = [sys.executable, "-m", "adalora_search", "worker", study_file, "--storage", url]
        cmd += ["--n-trials", str(budget.n_trials)] if budget.n_trials else []
        cmd += ["--timeout", str(budget.timeout)] if budget.timeout else []
        procs.append(subprocess.Popen(cmd, env=env))
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise

"""Create or resume a study and run trials on it: one process, K local workers, or many machines.

Each worker loops: fail stale trials -> claim a trial under the storage lock (only while the
study has fewer than n_trials finished-or-running trials) -> run it with a heartbeat -> tell.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from adalora_search.errors import Interrupted, Problem, RepeatedFailure, UserError
from adalora_search.search import diagnostics, fingerprint, progress, ranking, status, warm_start
from adalora_search.search import storage as storage_mod
from adalora_search.search.objective import TRIAL_ERRORS, Objective, pruning_value
from adalora_search.search.optuna_internals import AskTellGridSampler, storage_of, trial_id
from adalora_search.search.record import TrialRecord
from adalora_search.study.samplers import QMC, Grid
from adalora_search.study.space import enqueue_params, grid_search_space, optimizer_steps
from adalora_search.study.spec import StudySpec
from adalora_search.tasks import get_task
from adalora_search.train.data import TokenizedData, load_tokenized
from adalora_search.train.distributed import RankFailure
from adalora_search.train.modeling import load_tokenizer

_log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Budget:
    """When to stop claiming trials: a shared finished-trial total and/or a wall-clock limit."""

    n_trials: int | None
    timeout: float | None


def derived_seed(seed: int | None, n_stored: int, salt: int = 0) -> int | None:
    """The sampler seed for a claim made when the study holds ``n_stored`` trials.

    ``seed`` itself for a fresh study; otherwise a hash of (seed, n_stored). Claims are serialised
    by the claim lock, so each gets its own seed: a resumed study or a second worker never replays
    the parameters already proposed, and a rerun of the same history proposes the same points.
    """
    if seed is None or (n_stored == 0 and salt == 0):
        return seed
    text = f"{seed}:{n_stored}" if salt == 0 else f"{seed}:{n_stored}:{salt}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def build_sampler(spec: StudySpec, n_stored: int = 0, salt: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded for a claim made when the study holds ``n_stored`` trials; ``salt``: the
    warm-start trials claimed so far (queued trials keep ``n_stored`` still from one claim to the next, and the
    knobs a warm-start configuration leaves to the sampler must not get the same values each time).
    """
    root = spec.study.sampler.root
    if isinstance(root, QMC):  # the seed fixes the scrambling of one low-discrepancy sequence: keep it
        return root.build()
    seed = derived_seed(root.seed, n_stored, salt)
    if isinstance(root, Grid):
        return AskTellGridSampler(grid_search_space(spec), seed=seed)
    return root.model_copy(update={"seed": seed}).build()


def open_study(spec: StudySpec, url: str, allow_changed: bool = False, log=_log.info) -> optuna.Study:
    """Create the study or load it; check its fingerprint; enqueue each named baseline exactly once."""
    storage = storage_mod.open_storage(url, spec.study.heartbeat_interval, spec.study.max_retry)
    directions = [o.resolved_direction for o in spec.study.objectives]
    kwargs: dict[str, Any] = {
        "storage": storage,
        "study_name": spec.study.name,
        "sampler": build_sampler(spec),
        "pruner": spec.study.pruner.root.build(),
    }
    try:
        study = optuna.create_study(directions=directions, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
    warm = warm_start.pending(study, spec)  # read before the lock: the earlier study may share this storage
    with storage_mod.claim_lock(url):  # workers starting together: exactly one records and enqueues
        fingerprint.check(study, spec, allow_changed, log)
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise UserError(
                f"study.objective: the stored study {spec.study.name!r} has directions "
                f"{[d.name.lower() for d in study.directions]}; rename the study to change them"
            )
        _enqueue_baselines(study, spec)
        warm_start.enqueue(study, warm)  # after the baselines: they run first
    return study


def _enqueue_baselines(study: optuna.Study, spec: StudySpec) -> None:
    """Enqueue every named baseline not enqueued before (``baselines_enqueued``: the names done).

    Not ``skip_if_exists``: it compares searched params only, so two baselines that differ in a
    fixed knob would collapse into one. A study from before names were kept stores ``True``.
    """
    done = study.user_attrs.get("baselines_enqueued")
    if done is True:
        return
    names = list(done or [])
    for baseline in spec.baselines:
        if baseline.name not in names:
            study.enqueue_trial(enqueue_params(spec, baseline.params), user_attrs={"baseline": baseline.name})
            names.append(baseline.name)
    study.set_user_attr("baselines_enqueued", names)
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", [o.model_dump() for o in spec.study.objectives])
        with warnings.catch_warnings():  # experimental in Optuna 5; optuna-dashboard shows the names
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in spec.study.objectives])
        study.set_user_attr("task", spec.model.task)
        metric, sign = pruning_value(spec, get_task(spec.model.task))  # what trial.report gets, for plots
        study.set_user_attr("intermediate_values", metric if sign > 0 else f"-{metric}")


def prepare_data(spec: StudySpec) -> TokenizedData:
    """Load and tokenize once (cached on disk for every trial and worker); data errors surface here."""
    from adalora_search.study import rules

    tokenizer = load_tokenizer(spec.model)
    task = get_task(spec.model.task)
    data = load_tokenized(spec.data, tokenizer, task)
    problems = rules.check_total_steps(spec, optimizer_steps(spec.training, len(data.splits["train"])))
    relied = {o.metric for o in spec.study.objectives} | {spec.study.pruning_metric}  # what the search ranks by
    unread = task.perfect_prediction(data.splits["validation"])
    rouge = unread is not None and unread[0].startswith("rouge") and any(m and m.startswith("rouge") for m in relied)
    if unread is not None and (unread[0] in relied or rouge):  # invariant: a perfect prediction scores the best
        metric, target = unread
        problems.append(
            Problem(
                f"study.objective / {metric}",
                target[:120],
                f"scored against itself, this validation target gets less than {metric}'s best value: the metric "
                f"cannot read it, so every trial's {metric} would be wrong; report this, and optimise eval_loss",
            )
        )
    if problems:
        raise UserError(f"{len(problems)} problem(s) once the data is known", problems)
    return data


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _claim(
    study: optuna.Study, spec: StudySpec, url: str, budget: Budget, deadline: float | None
) -> optuna.Trial | None:
    """Ask for a trial unless the study has enough finished or running trials, or its grid is done."""
    if deadline is not None and time.time() >= deadline:
        return None
    optuna.storages.fail_stale_trials(study)
    with storage_mod.claim_lock(url):
        counts = _counts(study)
        taken = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.RUNNING]
        if budget.n_trials is not None and taken >= budget.n_trials:
            return None
        warm = sum(
            t.state != TrialState.WAITING and "warm_start" in t.user_attrs for t in study.get_trials(deepcopy=False)
        )
        study.sampler = build_sampler(spec, sum(counts.values()), warm)  # a fresh seed per claim: no replays
        if grid_done(study, counts):
            return None
        with warnings.catch_warnings():  # we run the heartbeat ourselves (storage.Heartbeat)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            return study.ask()


def grid_done(study: optuna.Study, counts: dict[TrialState, int] | None = None) -> bool:
    """A grid study whose every point has started and that has no queued trial left: a normal end."""
    counts = counts or _counts(study)
    sampler = study.sampler
    return isinstance(sampler, AskTellGridSampler) and not counts[TrialState.WAITING] and sampler.all_started(study)


def work(
    spec: StudySpec,
    url: str,
    budget: Budget,
    artifact_store: str | Path,
    log=_log.info,
    data: TokenizedData | None = None,
    allow_changed: bool = False,
    study: optuna.Study | None = None,
    processes: int = 1,
) -> int:
    """One worker: claim and run trials until the budget is spent; returns trials run here.

    ``data`` and ``study``: already loaded and opened by the caller (else done here); ``processes``: each
    trial runs on that many (``--gpus-per-trial``, train/distributed.py).

    Raises ``RepeatedFailure`` (exit code 2) once the study's last ``max_consecutive_failures``
    finished trials all failed, and re-raises a ``UserError`` from a trial after marking it FAIL.
    """
    data = data if data is not None else prepare_data(spec)
    study = study if study is not None else open_study(spec, url, allow_changed, log)
    if study.user_attrs.get(diagnostics.DATA_NOTES) != (notes := data.notes()):
        study.set_user_attr(diagnostics.DATA_NOTES, notes)
    examples = data.examples or {}  # QA: questions, each read as several windows
    sizes = {name: examples.get(name, len(split)) for name, split in data.splits.items()}  # resolution, for verdicts
    if study.user_attrs.get(status.SPLIT_SIZES) != sizes:
        study.set_user_attr(status.SPLIT_SIZES, sizes)
    try:  # the floor results are read against; a side computation: its failure stops no study
        trivial = get_task(spec.model.task).trivial(data.splits, data.label_names)
    except TRIAL_ERRORS as exc:
        log(f"the trivial predictor could not be scored ({type(exc).__name__}: {exc}); the summary goes without it")
        trivial = None
    if study.user_attrs.get(status.TRIVIAL) != trivial:
        study.set_user_attr(status.TRIVIAL, trivial)
    study.set_user_attr(status.BUDGET, {"n_trials": budget.n_trials, "timeout": budget.timeout})  # the time left
    study.set_user_attr("references_planned", [r.kind for r in spec.study.references])  # what the report awaits
    objective = Objective(spec, data, artifact_store, log, processes)
    deadline = time.time() + budget.timeout if budget.timeout else None
    ran = 0
    with interrupts_raise(), progress.bars(study, budget.n_trials) as bars:
        objective.on_progress = bars.step
        while (trial := _claim(study, spec, url, budget, deadline)) is not None:
            ran += 1
            state = _run_one(study, trial, objective, spec, log)
            best = best_text(study)
            log(progress_line(study, budget, deadline, best))
            bars.trial_done(best)
            if state == TrialState.FAIL:
                check_failures(study, spec.study.max_consecutive_failures)
    if grid_done(study):
        log(f"[study {study.study_name}] every point of the grid has run")
    return ran


def check_failures(study: optuna.Study, limit: int) -> None:
    """Raise ``RepeatedFailure`` when the last ``limit`` finished trials (by number) all failed.

    Read from storage, so failures of every worker and earlier runs count. Trials failed by an
    interrupt or a lost worker (no ``failure`` attr, or type ``Interrupted``) are re-queued, not counted.
    """
    records = [TrialRecord.of(t) for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))]
    finished = [
        r
        for r in records
        if r.state != TrialState.FAIL or (r.failure is not None and r.failure.get("type") not in (None, "Interrupted"))
    ]
    last = sorted(finished, key=lambda r: r.number)[-limit:]
    if len(last) < limit or any(r.state != TrialState.FAIL or r.failure is None for r in last):
        return
    reasons = list(
        dict.fromkeys(
            f"{r.failure['type']}: {r.failure['message'][:300].rstrip('. ')}" for r in last if r.failure is not None
        )
    )
    said = reasons[0] if len(reasons) == 1 else " | ".join(reasons[:3])
    raise RepeatedFailure(
        f"study.max_consecutive_failures = {limit}: the last {limit} trials "
        f"({', '.join(str(t.number) for t in last)}) all failed, stopping the study: {said}. Fix the cause "
        "(the study file, the data or the machine) and run again; raise study.max_consecutive_failures "
        "if occasional failures are expected"
    )


def _fail(study: optuna.Study, trial: optuna.Trial, exc: BaseException, log) -> None:
    """Tell FAIL with the reason in the ``failure`` attr (kept if the objective wrote one)."""
    if "failure" not in trial.user_attrs:
        trial.set_user_attr("failure", {"type": type(exc).__name__, "message": str(exc)[:2000]})
    study.tell(trial, state=TrialState.FAIL)
    log(f"[trial {trial.number}] FAILED ({type(exc).__name__}): {exc}")


def _run_one(study: optuna.Study, trial: optuna.Trial, objective: Objective, spec: StudySpec, log) -> TrialState:
    """Run one claimed trial and tell its end state; a user error fails it, then stops the worker."""
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    with storage_mod.Heartbeat(storage_of(study), trial_id(trial), spec.study.heartbeat_interval):
        try:
            values = objective(trial)
        except optuna.TrialPruned as exc:
            study.tell(trial, state=TrialState.PRUNED)
            log(f"[trial {trial.number}] {exc}")  # "trial pruned at step N: metric value"
            return TrialState.PRUNED
        except TRIAL_ERRORS as exc:
            _fail(study, trial, exc, log)
            if isinstance(exc, RankFailure) and trial.user_attrs.get("rank_retries", 0) < RANK_RETRIES:
                attrs = {**_retry_attrs(trial), "rank_retries": trial.user_attrs.get("rank_retries", 0) + 1}
                study.enqueue_trial(trial.params, user_attrs=attrs)  # as a lost worker's trial is retried
                log(f"[trial {trial.number}] re-queued: one of its processes died")
            return TrialState.FAIL
        except UserError as exc:  # the same input error would repeat in every trial
            _fail(study, trial, exc, log)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("failure", {"type": "Interrupted", "message": "stopped by SIGINT/SIGTERM"})
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs=_retry_attrs(trial))
            log(f"[trial {trial.number}] interrupted: marked FAIL and re-queued")
            raise Interrupted(trial.number) from None
    study.tell(trial, values)
    return TrialState.COMPLETE


RANK_RETRIES = 2  # a trial whose process died is re-queued this often (Optuna retries a lost worker's twice)


def _retry_attrs(trial: optuna.Trial) -> dict[str, Any]:
    attrs = {"retried_from": trial.number}
    for kept in ("baseline", "warm_start"):  # a re-run is still the baseline or warm-start trial it replaces
        if kept in trial.user_attrs:
            attrs[kept] = trial.user_attrs[kept]
    return attrs


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """While the worker runs, SIGINT and SIGTERM raise ``KeyboardInterrupt`` (also when started with SIGINT
    ignored, e.g. by ``&``), so the running trial is re-queued; the program's own handlers are back afterwards.
    Outside the main thread (a worker thread, a web server) Python cannot set handlers: they are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    wanted = {signal.SIGINT: signal.default_int_handler}
    if hasattr(signal, "SIGTERM"):
        wanted[signal.SIGTERM] = handler
    saved = {sig: signal.getsignal(sig) for sig in wanted}
    for sig, new in wanted.items():
        signal.signal(sig, new)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def best_text(study: optuna.Study) -> str | None:
    """``best 0.9048 (trial 6)``: the best trial as the progress line and bar show it; None before one."""
    best = best_trial(study)
    return None if best is None else f"best {best.values[0]:.4f} (trial {best.number})"


def progress_line(study: optuna.Study, budget: Budget, deadline: float | None, best: str | None) -> str:
    """One line of study progress: counts by state, ``best`` (``best_text``), elapsed and time left."""
    counts = _counts(study)
    done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    line = (
        f"[study {study.study_name}] {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} "
        f"pruned, {counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running"
    )
    if best is not None:
        line += f" | {best}"
    trials = study.get_trials(deepcopy=False)
    if any(t.datetime_start for t in trials):
        elapsed = status.busy_seconds(trials, time.time())  # time trials ran, not idle time between runs
        line += f" | elapsed {elapsed / 60:.1f} min"
        if budget.n_trials and done:
            line += f", ~{elapsed / done * max(budget.n_trials - done, 0) / 60:.1f} min left"
    return line


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best trial as status, report, export and references see it (``ranking.best``)."""
    return ranking.best(study)

"""The runner: smoke study, trial pruning, resume, exact n_trials across workers, killed workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from conftest import REPO, study_dict, write_study
from optuna.trial import TrialState

from adalora_search.app.session import run_session
from adalora_search.search.runner import Budget, work
from adalora_search.study.loader import load_spec
from adalora_search.tasks.sequence_classification import SequenceClassification

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def test_smoke_study_prunes_and_resumes_without_duplicating_baselines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'smoke.db'}"
    run_session(str(REPO / "studies" / "smoke.yaml"), 4, None, url, 1, [])
    study = load(url, "smoke")
    states = [t.state for t in study.trials]
    assert sum(s in FINISHED for s in states) == 4
    assert TrialState.PRUNED in states  # the median trial pruner stopped at least one trial
    pruned = next(t for t in study.trials if t.state == TrialState.PRUNED)
    assert pruned.user_attrs["rank_allocation"] and pruned.user_attrs["budget_curve"]  # kept what it had
    run_session(str(REPO / "studies" / "smoke.yaml"), 5, None, url, 1, [])  # resume: one more trial
    study = load(url, "smoke")
    assert sum(t.state in FINISHED for t in study.trials) == 5
    assert sum("baseline" in t.user_attrs for t in study.trials) == 1


def test_completed_trial_stores_every_result(tmp_path: Path) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    run_session(str(path), None, None, None, 1, [])
    trial = load(f"sqlite:///{tmp_path / 'study.db'}", "t").trials[0]  # default: <study file stem>.db
    for key in ("metrics", "rank_allocation", "budget_curve", "trainable_params", "timing", "config"):
        assert trial.user_attrs[key], key
    assert {
        "data_s",
        "build_s",
        "train_s",
        "eval_s",
        "train_tokens_per_s",
        "peak_memory_mb",
        "device",
        "wall_s",
    } <= set(trial.user_attrs["timing"])
    assert "test" in trial.user_attrs["metrics"]


@pytest.mark.parametrize("fault", ["metric", "oom"])
def test_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, monkeypatch, fault: str) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 2}))
    spec = load_spec(path)
    calls = {"n": 0}
    if fault == "metric":
        real = SequenceClassification.scores

        def broken(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise ValueError("metric exploded")
            return real(*args, **kwargs)

        monkeypatch.setattr(SequenceClassification, "scores", broken)
    else:
        from adalora_search.train import engine

        real_fb = engine.TrialRun._forward_backward

        def oom(self, batch):
            calls["n"] += 1
            if calls["n"] == 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return real_fb(self, batch)

        monkeypatch.setattr(engine.TrialRun, "_forward_backward", oom)
    url = f"sqlite:///{tmp_path / 't.db'}"
    work(spec, url, Budget(2, None), tmp_path / "artifacts", log=lambda _: None)
    study = load(url, "t")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    reason = failed[0].user_attrs["failure"]["message"]
    assert ("metric exploded" if fault == "metric" else "CUDA out of memory") in reason
    assert sum(t.state in FINISHED for t in study.trials) == 2  # the study went on


def _worker(path: Path, url: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, ADALORA_SEARCH_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "adalora_search", "worker", str(path), "--storage", url, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_running(url: str, name: str, timeout: float = 90) -> optuna.trial.FrozenTrial:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = load(url, name).get_trials(states=(TrialState.RUNNING,))
            if running and running[0].intermediate_values:
                return running[0]
        except KeyError:
            pass
        time.sleep(0.3)
    raise AssertionError("no trial started running")


def _long_study(tmp_path: Path, name: str, n_trials: int) -> Path:
    data = study_dict(
        study={"name": name, "n_trials": n_trials, "heartbeat_interval": 1},
        training={"max_steps": 600, "eval_every": 20},
        adalora={"schedule": {"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 10}},
    )
    return write_study(tmp_path, data)


def _storage_urls() -> list[str]:
    return ["sqlite", "postgresql"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", _storage_urls())
def test_sigkilled_worker_trial_is_retried_with_same_params(tmp_path: Path, backend: str, request) -> None:
    name = f"kill_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'k.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    path = _long_study(tmp_path, name, 2)
    victim = _worker(path, url)
    killed = _wait_running(url, name)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(3)  # past the grace period: the trial is stale now
    survivor = _worker(path, url)
    assert survivor.wait(timeout=300) == 0, survivor.stderr.read()
    study = load(url, name)
    assert study.trials[killed.number].state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    assert retried[0].state in FINISHED
    assert sum(t.state in FINISHED for t in study.trials) == 2


@pytest.mark.slow
def test_sigint_marks_the_running_trial_and_resume_finishes(tmp_path: Path) -> None:
    name = "interrupt"
    url = f"sqlite:///{tmp_path / 'i.db'}"
    path = _long_study(tmp_path, name, 1)
    proc = _worker(path, url)
    interrupted = _wait_running(url, name)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    stderr = proc.stderr.read()
    assert f"interrupted; trial {interrupted.number} re-queued; run again to resume" in stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    study = load(url, name)
    assert study.trials[interrupted.number].state == TrialState.FAIL
    assert study.trials[interrupted.number].user_attrs["failure"]["type"] == "Interrupted"
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 1
    again = _worker(path, url, "--n-trials", "1")
    assert again.wait(timeout=300) == 0
    study = load(url, name)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 1
    assert study.trials[-1].params == interrupted.params


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_on_postgresql_end_with_exact_trial_count(tmp_path: Path, pg_url: str, workers: int) -> None:
    name = f"pg_{workers}_{uuid.uuid4().hex[:8]}"
    data = study_dict(
        study={"name": name, "n_trials": 5, "sampler": {"type": "tpe", "seed": 0}},
        training={"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}},
        baselines=[
            {"name": "a", "params": {"training.learning_rate": 2e-3}},
            {"name": "b", "params": {"training.learning_rate": 4e-3}},
        ],
    )
    path = write_study(tmp_path, data)
    procs = [_worker(path, pg_url) for _ in range(workers)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    study = load(pg_url, name)
    trials = study.trials
    assert sum(t.state in FINISHED for t in trials) == 5
    assert len({t.number for t in trials}) == len(trials)
    baselines = [t.user_attrs["baseline"] for t in trials if "baseline" in t.user_attrs]
    assert sorted(baselines) == ["a", "b"]
    assert len({t.params["training.learning_rate"] for t in trials if "baseline" in t.user_attrs}) == 2


def test_status_and_locating_a_stored_study(tmp_path: Path) -> None:
    from adalora_search.app.session import locate
    from adalora_search.errors import UserError
    from adalora_search.search.status import status_lines

    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(UserError, match="run the study first"):
        locate(None, url, "t")
    assert not (tmp_path / "study.db").exists()  # reading never creates storage
    run_session(str(path), None, None, None, 1, [])
    lines = status_lines(locate(None, url, "t"))
    assert lines[0] == "study t: 1 complete | all 1 trials finished"
    assert lines[1].split() == ["run", "val", "accuracy", "test", "accuracy", "trainable"]  # the run's summary
    assert lines[2].startswith("best trial 0 ") and "best trial 0: no searched knob" in lines
    with pytest.raises(UserError, match="no such study"):
        locate(None, url, "other")


@pytest.mark.slow
def test_workers_per_gpu_on_cpu_starts_the_workers_and_ends_with_exact_trial_count(tmp_path: Path, monkeypatch) -> None:
    from adalora_search.search import workers

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a machine without a GPU: they share the CPU
    started: list[list[str]] = []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):
        started.append(cmd)
        return real_popen(cmd, **kwargs)

    monkeypatch.setattr(workers.subprocess, "Popen", popen)
    path = write_study(tmp_path, study_dict(study={"n_trials": 3}))
    run_session(str(path), None, None, None, 1, [], workers_per_gpu=2)
    assert len(started) == 2 and all("worker" in cmd for cmd in started)
    study = load(f"sqlite:///{tmp_path / 'study.db'}", "t")
    assert sum(t.state in FINISHED for t in study.trials) == 3
    assert len(study.trials) == 3


def test_worker_slots_per_gpu() -> None:
    from adalora_search.errors import UserError
    from adalora_search.search.workers import worker_slots

    assert worker_slots(1, ["0", "1"], 3) == ["0", "0", "0", "1", "1", "1"]
    assert worker_slots(1, ["2"], 1) == ["2"]
    assert worker_slots(3, [], 1) == [None, None, None]
    with pytest.raises(UserError, match="--workers = 2 and --workers-per-gpu = 2: choose one"):
        worker_slots(2, [], 2)


def test_status_json_is_machine_readable(tmp_path: Path, monkeypatch, capsys) -> None:
    """Issue #16 item 4: `status --json` — counts, best trial, one row per trial (a failed one with its reason)."""
    import json

    from conftest import cli_exit_code
    from optuna.trial import create_trial

    path = write_study(
        tmp_path,
        study_dict(study={"n_trials": 2}, training={"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}),
    )
    url = f"sqlite:///{tmp_path / 'study.db'}"
    work(load_spec(path), url, Budget(2, None), tmp_path / "artifacts", log=lambda _: None)
    study = optuna.load_study(study_name="t", storage=url)
    study.add_trial(
        create_trial(
            state=TrialState.FAIL, user_attrs={"failure": {"type": "TrialFailure", "message": "loss is NaN at step 3"}}
        )
    )
    capsys.readouterr()
    code = cli_exit_code(["status", str(path), "--json"], monkeypatch)
    out = capsys.readouterr().out  # stdout only: log messages go to stderr
    assert code == 0, out
    status = json.loads(out)
    assert status["study"] == "t" and status["directions"] == ["maximize"]
    assert status["counts"] == {"RUNNING": 0, "COMPLETE": 2, "PRUNED": 0, "FAIL": 1, "WAITING": 0}
    best = max(study.trials[:2], key=lambda t: t.values[0])
    assert status["best"]["number"] == best.number and status["best"]["values"] == best.values
    assert status["best"]["params"] == best.params and "training.learning_rate" in status["best"]["params"]
    rows = {row["number"]: row for row in status["trials"]}
    assert [rows[n]["state"] for n in (0, 1, 2)] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert rows[0]["steps"] == 12 and rows[0]["trainable_params"]["final"] < rows[0]["trainable_params"]["initial"]
    assert rows[2]["failure"] == {"type": "TrialFailure", "message": "loss is NaN at step 3"}
    assert rows[2]["values"] is None and rows[0]["failure"] is None
    code = cli_exit_code(["status", "--storage", url, "--study", "t", "--json"], monkeypatch)
    assert code == 0 and json.loads(capsys.readouterr().out) == status


def test_sqlite_claim_lock_is_a_filelock_that_serialises_workers(tmp_path: Path) -> None:
    """Issue #16 item 3: the claim lock is filelock's, on `<database>.lock` (workers of any version share it)."""
    import threading

    from filelock import FileLock, Timeout

    from adalora_search.search.storage import claim_lock

    url = f"sqlite:///{tmp_path / 'study.db'}"
    other = FileLock(str(tmp_path / "study.db.lock"))  # another worker's view of the same lock
    with claim_lock(url):
        with pytest.raises(Timeout):
            other.acquire(blocking=False)
    with other:  # released on exit
        pass
    counter = tmp_path / "claimed"
    counter.write_text("0")

    def claim_many() -> None:
        for _ in range(25):
            with claim_lock(url):  # read, yield to the other threads, write: lost updates unless serialised
                seen = int(counter.read_text())
                time.sleep(0)
                counter.write_text(str(seen + 1))

    threads = [threading.Thread(target=claim_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.read_text() == "100"

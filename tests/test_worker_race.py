"""Issue #21 item 6 (field case case34, optuna/optuna#1092): workers started at the same instant on an
empty database all start, and the study ends with exactly n_trials finished trials.

Four worker processes, each released by one barrier per round onto a fresh database, five rounds, on
PostgreSQL and on SQLite.
"""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import postgres_url, study_dict, write_study

WORKERS, ROUNDS, N_TRIALS = 4, 5, 4


def _worker(study_file: str, urls: list[str], store: str, barrier, results) -> None:  # noqa: ANN001 - mp objects
    """One worker: for each round, wait for the others, then join that round's empty database."""
    from adalora_search.search.runner import Budget, prepare_data, work
    from adalora_search.study.loader import load_spec

    spec = load_spec(study_file)
    data = prepare_data(spec)
    said = []
    for url in urls:
        barrier.wait(timeout=300)
        try:
            work(spec, url, Budget(N_TRIALS, None), store, log=lambda _: None, data=data)
            said.append("ok")
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            said.append(f"{type(exc).__name__}: {exc}")
    results.put(said)


def _race(tmp_path: Path, urls: list[str]) -> None:
    study = study_dict(
        study={"n_trials": N_TRIALS},
        training={"max_steps": 2, "eval_every": 2},
        adalora={"schedule": {"unit": "steps", "t_init": 1, "t_final": 0, "delta_t": 1}},
    )
    path = write_study(tmp_path, study)
    from adalora_search.search.runner import prepare_data
    from adalora_search.study.loader import load_spec

    prepare_data(load_spec(path))  # tokenized once, as `run` does before it starts workers
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    procs = [
        context.Process(target=_worker, args=(str(path), urls, str(tmp_path / "store"), barrier, results))
        for _ in range(WORKERS)
    ]
    for p in procs:
        p.start()
    said = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(s == ["ok"] * ROUNDS for s in said), said
    for url in urls:
        trials = optuna.load_study(study_name="t", storage=url).trials
        assert sum(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in trials) == N_TRIALS


@pytest.mark.slow
def test_workers_started_together_on_fresh_sqlite_files(tmp_path: Path) -> None:
    _race(tmp_path, [f"sqlite:///{tmp_path / f'round{i}.db'}" for i in range(ROUNDS)])


@pytest.mark.slow
def test_workers_started_together_on_fresh_postgresql_databases(tmp_path: Path) -> None:
    base = postgres_url()
    if base is None:
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 (never skipped in CI)")
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    names = [f"race_{uuid.uuid4().hex[:10]}" for _ in range(ROUNDS)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        _race(tmp_path, [base.rsplit("/", 1)[0] + f"/{name}" for name in names])
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()

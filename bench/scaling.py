"""Figure 4: 1 vs 2 worker processes (1 thread each) on SQLite and PostgreSQL.

A study of short trials on a small model built from a config (so storage costs are visible):
finished trials per hour, and storage overhead per trial = (trial's start-to-complete time in
storage) - (time inside the objective), i.e. claim, heartbeat and attribute writes.

    python bench/scaling.py --trials 12 --out bench/results/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import yaml

PG = os.environ.get("ADALORA_SEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def study_file(directory: Path, name: str, n_trials: int) -> Path:
    data = {
        "study": {
            "name": name,
            "n_trials": n_trials,
            "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "none"},
        },
        "model": {
            "name_or_path": "minilm-l6",
            "init": "random",
            "config_overrides": {
                "num_hidden_layers": 4,
                "hidden_size": 128,
                "num_attention_heads": 4,
                "intermediate_size": 512,
            },
        },
        "data": {
            "source": "bbc-news",
            "text_fields": ["headline"],
            "split": {"validation": 0.1, "seed": 0},
            "max_train_samples": 512,
            "max_length": 32,
        },
        "training": {
            "max_steps": 48,
            "batch_size": 16,
            "eval_every": 16,
            "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
        },
        "adalora": {"target_modules": ["query", "value"], "init_r": 8, "target_r": 2},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(backend: str, workers: int, n_trials: int, directory: Path) -> dict:
    name = f"scale_{backend}_{workers}_{uuid.uuid4().hex[:6]}"
    url = f"sqlite:///{directory / name}.db" if backend == "sqlite" else PG
    path = study_file(directory, name, n_trials)
    env = dict(os.environ, ADALORA_SEARCH_THREADS="1", OMP_NUM_THREADS="1")
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "adalora_search", "worker", str(path), "--storage", url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    assert all(p.wait() == 0 for p in procs)
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=name, storage=url).trials
    overhead = [
        (t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs["timing"]["wall_s"]
        for t in trials
        if t.datetime_complete
    ]
    return {
        "backend": backend,
        "workers": workers,
        "trials": len(trials),
        "wall_s": wall,
        "trials_per_hour": 3600 * len(trials) / wall,
        "storage_overhead_s_per_trial": statistics.median(overhead),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--out", default="bench/results/scaling.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite", "postgresql"):
            for workers in (1, 2):
                rows.append(run(backend, workers, args.trials, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "command": f"python bench/scaling.py --trials {args.trials}",
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""The cluster recipes in docs/ run as written: the SLURM array script as an array task would run it,
the Kubernetes Job parsed and its worker command read by our own command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import study_dict, write_study

from adalora_search.cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_slurm_array_task_runs_a_worker_on_the_shared_study(tmp_path: Path) -> None:
    study = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    secret = tmp_path / "storage-url"
    secret.write_text(url)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # adalora-search of this venv
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_ARRAY_TASK_ID": "0",
        "SLURM_CPUS_PER_TASK": "1",
        "ADALORA_SEARCH_STORAGE_FILE": str(secret),
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("ADALORA_SEARCH_STORAGE", None)
    env["SLURM_GPUS_PER_TASK"] = "a100:0"  # typed, as SLURM may give it (none here: the CPU)
    proc = subprocess.run(  # the storage URL in a file and then the environment, never on a command line
        ["bash", str(REPO / "docs" / "slurm" / "adalora-search.sbatch"), str(study)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "array task 0 of job 4242: 0 GPUs, --gpus-per-trial 1" in proc.stdout
    assert "shared.db" not in proc.stdout + proc.stderr  # the URL was never printed
    trials = optuna.load_study(study_name="t", storage=url).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]
    assert trials[0].user_attrs["rank_allocation"]


def test_slurm_script_without_a_study_says_how_to_call_it() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "docs" / "slurm" / "adalora-search.sbatch")], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "usage: sbatch --array=0-N" in proc.stderr


def test_kubernetes_job_parses_and_its_worker_command_is_ours() -> None:
    job = yaml.safe_load((REPO / "docs" / "k8s" / "adalora-search-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["parallelism"] == job["spec"]["completions"] >= 1
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[0] == "adalora-search" and command[1] == "worker"
    worker = cli.get_command(None, "worker")  # type: ignore[arg-type]
    params = worker.make_context("worker", list(command[2:])).params
    (storage,) = [p for p in worker.params if p.name == "storage"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env[storage.envvar]["valueFrom"]  # --storage from a Secret, not the command line
    assert not any("://" in part for part in command)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert str(Path(params["study_file"]).parent) in mounts  # the study file is mounted where the command reads it
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "configMap" in volumes[mounts["/study"]] and params["gpus_per_trial"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == params["gpus_per_trial"]

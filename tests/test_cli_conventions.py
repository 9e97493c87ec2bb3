"""Command-line and library conventions a user of click, Optuna and transformers expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from conftest import run_cli, study_dict, write_study

from adalora_search.search.session import storage_url
from adalora_search.study.loader import load_spec


def test_version_and_short_help_list_every_verb(monkeypatch, capsys) -> None:
    code, out = run_cli(["--version"], monkeypatch, capsys)
    assert code == 0 and "version 0.1.0" in out
    code, out = run_cli(["-h"], monkeypatch, capsys)
    assert code == 0
    assert all(verb in out for verb in ("validate", "run", "worker", "status", "report", "export", "retrain"))


def test_study_carries_its_metric_names_for_the_dashboard(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    spec = load_spec(path)
    study = optuna.load_study(study_name=spec.study.name, storage=storage_url(spec, str(path), None))
    assert study.metric_names == ["accuracy"]


def test_importing_the_package_leaves_transformers_logging_alone() -> None:
    code = ("import transformers; from transformers.utils import logging as l; before = l.get_verbosity(); "
            "import adalora_search.train.modeling, adalora_search.train.engine, adalora_search.search.runner; "
            "assert l.get_verbosity() == before, (before, l.get_verbosity()); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-500:]

"""Command-line and library conventions a user of click, Optuna and transformers expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from conftest import run_cli, study_dict, write_study

from adalora_search.app.session import storage_url
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
    code = (
        "import transformers; from transformers.utils import logging as l; before = l.get_verbosity(); "
        "import adalora_search.train.modeling, adalora_search.train.engine, adalora_search.search.runner; "
        "assert l.get_verbosity() == before, (before, l.get_verbosity()); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-500:]


def test_progress_goes_through_logging_quiet_and_verbose(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 2, "name": "a"}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    from conftest import cli_exit_code

    assert cli_exit_code(["run", str(path), "--n-trials", "3"], monkeypatch) == 0
    captured = capsys.readouterr()
    assert "[trial 2] step" in captured.err and "[study a]" in captured.err  # progress: logging, stderr
    assert "export: adalora-search export" in captured.out  # the result: stdout
    assert "[trial" not in captured.out
    assert cli_exit_code(["-q", "run", str(path), "--n-trials", "4"], monkeypatch) == 0
    captured = capsys.readouterr()
    assert "] step " not in captured.err and "export: adalora-search export" in captured.out
    assert cli_exit_code(["-v", "run", str(path), "--n-trials", "4"], monkeypatch) == 0
    import logging

    assert logging.getLogger("adalora_search").level == logging.DEBUG
    from adalora_search import cli

    ours = [h for h in logging.getLogger("adalora_search").handlers if isinstance(h, type(cli._HANDLER))]
    assert ours == [cli._HANDLER]  # one handler however often the CLI is invoked


def test_progress_bars_count_finished_trials_and_the_running_trial(tmp_path: Path) -> None:
    import io

    from adalora_search.search import progress

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=1.0))
    out = io.StringIO()
    with progress.bars(study, 4, disable=False, file=out) as bars:
        bars.step(1, 5, 20)
        bars.step(1, 10, 20)
        assert bars.trial_bar is not None and bars.trial_bar.n == 10 and bars.trial_bar.total == 20
        study.add_trial(optuna.trial.create_trial(value=0.5))
        bars.trial_done("best 0.5000 (trial 1)")
        assert bars.trial_bar is None and bars.bar.n == 2 and bars.bar.total == 4
    text = out.getvalue()
    assert "trial 1" in text and "/20" in text and "2/4" in text and "best 0.5000 (trial 1)" in text
    assert "<" in text  # tqdm's elapsed<remaining: the ETA

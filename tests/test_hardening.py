"""Hardening (issue #12): repeated failures, edited study files, resumed samplers, baselines,
YAML that reads differently than it looks, passwords in storage URLs, objective directions, grids."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import run_cli, study_dict, write_study
from optuna.trial import TrialState

from adalora_search.app.session import run_session, storage_url
from adalora_search.errors import RepeatedFailure, UserError
from adalora_search.search.runner import Budget, open_study, work
from adalora_search.study.loader import load_spec, parse_spec
from adalora_search.study.space import trial_config
from adalora_search.study.spec import METRIC_DIRECTIONS, Objective
from adalora_search.tasks.sequence_classification import SequenceClassification

FIELD = Path(__file__).parent / "field_cases"
QUIET = {"log": lambda _: None}


def load(url: str, name: str = "t") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _always_failing_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("metric exploded")

    monkeypatch.setattr(SequenceClassification, "scores", broken)


# ---------------------------------------------------------------- 1. repeated failures
def test_a_trial_failing_every_time_stops_the_study_after_k_failures(tmp_path: Path, monkeypatch) -> None:
    _always_failing_metrics(monkeypatch)
    spec = load_spec(write_study(tmp_path, study_dict(study={"n_trials": 3, "max_consecutive_failures": 2})))
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with pytest.raises(RepeatedFailure, match="metric exploded") as info:
        work(spec, url, Budget(3, None), tmp_path / "a", **QUIET)
    assert "max_consecutive_failures" in str(info.value)
    assert [t.state for t in load(url).trials] == [TrialState.FAIL] * 2
    with pytest.raises(RepeatedFailure):  # resumed: the stored failures count, one more trial and out
        work(spec, url, Budget(3, None), tmp_path / "a", **QUIET)
    assert [t.state for t in load(url).trials] == [TrialState.FAIL] * 3


def test_repeated_failures_with_timeout_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    _always_failing_metrics(monkeypatch)
    path = write_study(tmp_path, study_dict(study={"n_trials": None}))
    code, output = run_cli(["run", str(path), "--timeout", "3600"], monkeypatch, capsys)
    assert code == 2 and "metric exploded" in output and "Traceback" not in output
    assert len(load(f"sqlite:///{tmp_path / 'study.db'}").trials) == 3  # the default: 3 in a row


# ---------------------------------------------------------------- 2. edited study files
def test_edited_study_file_is_refused_on_the_stored_study(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case02: one more target-module choice, same study name and storage."""
    v1 = study_dict(study={"n_trials": 1}, adalora={"target_modules": {"choices": [["query", "value"], ["query"]]}})
    v2 = copy.deepcopy(v1)
    v2["adalora"]["target_modules"]["choices"].append(["query", "key", "value"])
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert run_cli(["run", str(write_study(tmp_path, v1, "v1.yaml")), "--storage", url], monkeypatch, capsys)[0] == 0
    code, output = run_cli(
        ["run", str(write_study(tmp_path, v2, "v2.yaml")), "--storage", url, "--n-trials", "2"], monkeypatch, capsys
    )
    assert code == 2 and "changed: space" in output and "adalora.target_modules" in output
    assert "use a new study.name" in output and "--allow-changed-study" in output
    assert len(load(url).trials) == 1  # nothing stored


def test_allow_changed_study_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_session(str(write_study(tmp_path, study_dict(study={"n_trials": 1}), "a.yaml")), None, None, url, 1, [])
    longer = write_study(tmp_path, study_dict(study={"n_trials": 2}, training={"max_steps": 8}), "b.yaml")
    with pytest.raises(UserError, match="changed: training"):
        run_session(str(longer), None, None, url, 1, [])
    run_session(str(longer), None, None, url, 1, [], allow_changed=True)
    assert len(load(url).trials) == 2


def test_fingerprint_ignores_run_details_and_sees_every_comparable_section(tmp_path: Path) -> None:
    from adalora_search.search import fingerprint

    base = fingerprint.hashes(fingerprint.sections(parse_spec(yaml.safe_dump(study_dict()))))
    same = study_dict(
        study={"n_trials": 9, "sampler": {"type": "tpe"}},
        training={"num_threads": 2, "device": "cpu", "eval_batch_size": 7},
    )
    assert fingerprint.hashes(fingerprint.sections(parse_spec(yaml.safe_dump(same)))) == base
    edits = {
        "model": {"model": {**study_dict()["model"], "config_overrides": {"num_hidden_layers": 1}}},
        "data": {"data": {**study_dict()["data"], "max_length": 16}},
        "training": {"training": {**study_dict()["training"], "batch_size": 4}},
        "space": {"adalora": {**study_dict()["adalora"], "lora_alpha": {"low": 4.0, "high": 8.0}}},
    }
    for section, edit in edits.items():
        changed = fingerprint.hashes(fingerprint.sections(parse_spec(yaml.safe_dump(study_dict(**edit)))))
        assert [k for k in base if base[k] != changed[k]] == [section]
    objective = study_dict(study={"objective": {"metric": "eval_loss"}})
    assert fingerprint.hashes(fingerprint.sections(parse_spec(yaml.safe_dump(objective))))["space"] != base["space"]


def test_study_created_before_fingerprints_is_accepted_and_gets_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.create_study(study_name="t", storage=url, direction="maximize")
    spec = load_spec(write_study(tmp_path, study_dict()))
    study = open_study(spec, url)
    assert set(study.user_attrs["fingerprint"]) == {"model", "data", "training", "space"}
    assert study.user_attrs["fingerprint_sections"]["training"]["max_steps"] == 12


def test_two_study_files_with_one_name_never_share_the_default_database(tmp_path: Path) -> None:
    a, b = write_study(tmp_path, study_dict(), "a.yaml"), write_study(tmp_path, study_dict(), "b.yaml")
    spec = load_spec(a)
    assert storage_url(spec, str(a), None) != storage_url(spec, str(b), None)
    assert storage_url(spec, str(a), None).endswith("/a.db")


# ---------------------------------------------------------------- 3. resumed samplers
def test_resumed_study_proposes_new_parameters(tmp_path: Path) -> None:
    data = study_dict(training={"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}})
    spec = load_spec(write_study(tmp_path, data))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    work(spec, url, Budget(2, None), tmp_path / "a", **QUIET)
    work(spec, url, Budget(4, None), tmp_path / "a", **QUIET)  # resume: two more
    rates = [t.params["training.learning_rate"] for t in load(url).trials]
    assert len(rates) == 4 and len(set(rates)) == 4


# ---------------------------------------------------------------- 4. baselines
def test_baselines_differing_only_in_a_fixed_knob_both_run(tmp_path: Path) -> None:
    """Field case case05."""
    data = study_dict(
        training={"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}},
        baselines=[
            {"name": "alpha8", "params": {"training.learning_rate": 1e-3, "adalora.lora_alpha": 8.0}},
            {"name": "alpha32", "params": {"training.learning_rate": 1e-3, "adalora.lora_alpha": 32.0}},
        ],
    )
    spec = load_spec(write_study(tmp_path, data))
    url = f"sqlite:///{tmp_path / 'b.db'}"
    work(spec, url, Budget(2, None), tmp_path / "a", **QUIET)
    work(spec, url, Budget(3, None), tmp_path / "a", **QUIET)  # resume: no baseline again
    trials = load(url).trials
    runs = {
        t.user_attrs["baseline"]: t.user_attrs["config"]["adalora"]["lora_alpha"]
        for t in trials
        if "baseline" in t.user_attrs
    }
    assert runs == {"alpha8": 8.0, "alpha32": 32.0}
    assert sum("baseline" in t.user_attrs for t in trials) == 2


def test_comma_joined_target_modules_in_a_baseline_is_a_list(tmp_path: Path) -> None:
    """Field case case12: the form validate and the report print."""
    data = study_dict(
        adalora={"target_modules": ["query", "key", "value"]},
        baselines=[
            {"name": "qv", "params": {"adalora.target_modules": "query, value"}},
            {"name": "qv-list", "params": {"adalora.target_modules": ["query,value"]}},
        ],
    )
    spec = load_spec(write_study(tmp_path, data))
    assert spec.baselines[0].params["adalora.target_modules"] == ["query", "value"]
    for name in ("qv", "qv-list"):
        assert trial_config(spec, optuna.trial.FixedTrial({}), name).adalora.target_modules == ["query", "value"]


def test_user_error_inside_a_trial_fails_it_and_stops(tmp_path: Path) -> None:
    data = study_dict(baselines=[{"name": "nothing", "params": {"adalora.target_modules": ["no_such_module"]}}])
    spec = load_spec(write_study(tmp_path, data))
    url = f"sqlite:///{tmp_path / 'u.db'}"
    with pytest.raises(UserError, match="PEFT refused"):
        work(spec, url, Budget(2, None), tmp_path / "a", **QUIET)
    (trial,) = load(url).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["failure"]["type"] == "UserError"
    assert "PEFT refused" in trial.user_attrs["failure"]["message"]


# ---------------------------------------------------------------- 5. YAML
@pytest.mark.parametrize("name", ["a_baseline.yaml", "b_baseline_lr.yaml", "c_config_override.yaml"])
def test_exponent_floats_without_a_dot_are_floats(name: str) -> None:
    """Field case case07: 1e-3, 5e-2, 1e-7 are floats in ranges, baselines and config overrides."""
    spec = load_spec(FIELD / "case07" / name)
    assert spec.training.learning_rate.low == 1e-3 and spec.training.learning_rate.high == 3e-2
    if spec.baselines:
        assert spec.baselines[0].params["training.learning_rate"] == 1e-3
    if "layer_norm_eps" in spec.model.config_overrides:
        assert spec.model.config_overrides["layer_norm_eps"] == 1e-7


def test_yaml_reads_numbers_and_booleans_as_they_look() -> None:
    from adalora_search.study.loader import StudyLoader

    text = "a: [1e-3, -1E+3, 5e-2, 010, 0x10, 1:30, yes, no, on, true, 1.0e3]"
    assert yaml.load(text, Loader=StudyLoader)["a"] == [
        0.001,
        -1000.0,
        0.05,
        10,
        16,
        "1:30",
        "yes",
        "no",
        "on",
        True,
        1000.0,
    ]


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case06: an old `adalora:` block left at the bottom."""
    study = tmp_path / "study.yaml"
    study.write_text((FIELD / "case06" / "study.yaml").read_text())
    code, output = run_cli(["validate", "--no-data", str(study)], monkeypatch, capsys)
    assert code == 2
    assert (
        f"{study}:24: training.learning_rate = '1.0e-3': duplicate key 'learning_rate': first at line 23, "
        "again at line 24" in output
    )
    assert f"{study}:32: adalora = '{{...}}': duplicate key 'adalora': first at line 25, again at line 32" in output


def test_huge_study_file_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    study = tmp_path / "huge.yaml"
    study.write_text("# " + "x" * (6 * 1024 * 1024) + "\n")
    code, output = run_cli(["validate", str(study)], monkeypatch, capsys)
    assert code == 2 and "MB" in output and "Traceback" not in output


# ---------------------------------------------------------------- 6. passwords
PASSWORD = "winter@2031"


@pytest.mark.parametrize(
    "command", ["run", "validate", "status", "report", "run --storage", "status --storage", "report --storage"]
)
def test_password_with_raw_at_is_refused_and_never_shown(tmp_path: Path, monkeypatch, capsys, command: str) -> None:
    """Field case case13."""
    url = f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:5432/study_db"
    verb, *flag = command.split()
    if flag:
        args = [verb, str(write_study(tmp_path, study_dict())), "--storage", url]
        if verb != "run":
            args = [verb, "--storage", url, "--study", "t"]
    else:
        args = [verb, str(write_study(tmp_path, study_dict(study={"storage": url})))]
    code, output = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "percent-encode" in output and "Traceback" not in output
    leaks = {PASSWORD[i:j] for i in range(len(PASSWORD)) for j in range(i + 3, len(PASSWORD) + 1)}
    assert not [s for s in leaks if s in output.replace(str(tmp_path), "")]


def test_password_fragment_in_port_is_not_a_traceback(monkeypatch, capsys) -> None:
    code, output = run_cli(
        ["status", "--storage", "postgresql://alice:p@ss:w0rd@127.0.0.1:5432/x", "--study", "x"], monkeypatch, capsys
    )
    assert code == 2 and "w0rd" not in output and "Traceback" not in output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:winter@2031@127.0.0.1:5432/db",
        "postgresql://alice:wint:er@2031@127.0.0.1/db",
        "postgresql://alice:win?ter@2031@127.0.0.1/db",
        "postgresql://alice:winter:2031/db",
    ],
)
def test_storage_url_problems_never_quote_the_password(url: str) -> None:
    from adalora_search import urls

    problem = urls.url_problem(url)
    assert problem and "percent-encode the password" in problem
    shown = urls.mask(url) + problem
    assert not any(part in shown for part in ("winter", "wint", "2031", "203", "er@", "ter"))
    assert urls.url_problem("postgresql://alice:winter%402031@127.0.0.1:5432/db") is None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:winter2031@127.0.0.1:5432/db",
        "http://alice:winter2031@host:5000",
        "postgresql://alice:winter@2031@127.0.0.1/db",
    ],
)
def test_one_masker_for_storage_and_tracking_urls(url: str) -> None:
    """``urls.mask`` and ``urls.redact`` hide the password of any URL the study names (storage or MLflow)."""
    from adalora_search import urls

    shown = urls.mask(url) + urls.redact(f"connection to {url} refused", url)
    assert "alice" in shown and "winter" not in shown and "2031" not in shown
    assert urls.mask("./mlruns") == "./mlruns"
    assert "winter" not in urls.mask("postgresql:alice:winter2031@db/x")  # no "//": not parsed, not shown either


# ---------------------------------------------------------------- 7. objective direction
def test_objective_direction_defaults_from_the_metric() -> None:
    assert Objective(metric="eval_loss").direction == "minimize"
    assert Objective(metric="perplexity").resolved_direction == "minimize"
    assert Objective(metric="trainable_params").direction == "minimize"
    assert Objective(metric="accuracy").direction == "maximize"
    assert Objective(metric="eval_loss", direction="maximize").direction == "maximize"  # written wins
    metrics = set(Objective.model_fields["metric"].annotation.__args__)
    assert metrics == set(METRIC_DIRECTIONS)


def test_eval_loss_study_is_minimized(tmp_path: Path) -> None:
    """Field case case11."""
    spec = load_spec(write_study(tmp_path, study_dict(study={"objective": {"metric": "eval_loss"}})))
    study = open_study(spec, f"sqlite:///{tmp_path / 'd.db'}")
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE]
    assert study.user_attrs["objectives"] == [{"metric": "eval_loss", "direction": "minimize"}]


# ---------------------------------------------------------------- 8. grid
def test_exhausted_grid_is_a_normal_end(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case03: the grid has 2 points; n_trials allows 3."""
    data = study_dict(
        study={"n_trials": 3, "sampler": {"type": "grid"}}, training={"learning_rate": {"choices": [1e-3, 1e-2]}}
    )
    path = write_study(tmp_path, data)
    code, output = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 0, output
    assert "every point of the grid has run" in output and "report: adalora-search report" in output
    trials = load(f"sqlite:///{tmp_path / 'study.db'}").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert {t.params["training.learning_rate"] for t in trials} == {1e-3, 1e-2}

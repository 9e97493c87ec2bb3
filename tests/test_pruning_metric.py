"""``study.pruning_metric``: the trial pruner reads another validation metric than the objective."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import study_dict, write_study

from adalora_search.app.session import run_session
from adalora_search.search import fingerprint
from adalora_search.search.objective import pruning_value
from adalora_search.study.loader import load_spec, parse_spec
from adalora_search.tasks import get_task


@pytest.mark.parametrize(
    "objective, pruning_metric, expect",
    [
        ({"metric": "accuracy"}, None, ("accuracy", 1.0)),
        ({"metric": "accuracy"}, "eval_loss", ("eval_loss", -1.0)),
        ({"metric": "accuracy"}, "f1_macro", ("f1_macro", 1.0)),
        ({"metric": "eval_loss"}, "accuracy", ("accuracy", -1.0)),
        ({"metric": "eval_loss"}, None, ("eval_loss", 1.0)),
        ({"metric": "accuracy", "direction": "minimize"}, None, ("accuracy", 1.0)),  # the objective is never negated
    ],
)
def test_pruning_value_is_negated_only_when_better_the_other_way(objective, pruning_metric, expect) -> None:
    spec = parse_spec(yaml.safe_dump(study_dict(study={"objective": objective, "pruning_metric": pruning_metric})))
    assert pruning_value(spec, get_task("classification")) == expect


def test_trials_report_negated_eval_loss_and_are_pruned_on_it(tmp_path: Path) -> None:
    path = write_study(
        tmp_path,
        study_dict(
            study={
                "n_trials": 4,
                "pruning_metric": "eval_loss",
                "sampler": {"type": "random", "seed": 0},
                "pruner": {"type": "median", "n_startup_trials": 1},
            },
            training={"learning_rate": {"low": 1.0e-4, "high": 5.0e-2, "log": True}},
        ),
    )
    run_session(str(path), None, None, None, 1, [])
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.user_attrs["intermediate_values"] == "-eval_loss"
    for trial in study.trials:
        losses = {h["step"]: h["eval_loss"] for h in trial.user_attrs["history"] if "eval_loss" in h}
        assert trial.intermediate_values == pytest.approx({step: -loss for step, loss in losses.items()})
        if trial.state == optuna.trial.TrialState.COMPLETE:  # selected on accuracy all the same
            assert trial.value == trial.user_attrs["metrics"]["final"]["accuracy"]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stopped no trial"
    for trial in pruned:  # MedianPruner: its best -eval_loss so far below the completed trials' median there
        step = max(trial.intermediate_values)
        before = [
            t.intermediate_values[step]
            for t in study.trials
            if t.number < trial.number and t.state == optuna.trial.TrialState.COMPLETE and step in t.intermediate_values
        ]
        assert max(trial.intermediate_values.values()) < statistics.median(before)


def test_changing_the_pruning_metric_changes_the_fingerprint(tmp_path: Path) -> None:
    base = fingerprint.hashes(fingerprint.sections(load_spec(write_study(tmp_path, study_dict()))))
    spec = load_spec(write_study(tmp_path, study_dict(study={"pruning_metric": "eval_loss"}), name="b.yaml"))
    changed = fingerprint.hashes(fingerprint.sections(spec))
    assert [k for k in base if base[k] != changed[k]] == ["space"]

"""Results a user can misread: one ranking everywhere, warnings stored with the trial, honest heatmaps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import study_dict, write_study
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from adalora_search.errors import UserError
from adalora_search.results import tables
from adalora_search.results.export import export_trial, pick_trial
from adalora_search.search import ranking
from adalora_search.search.runner import Budget, work
from adalora_search.search.status import status_lines, summary_lines
from adalora_search.study.loader import load_spec, parse_spec
from adalora_search.tasks.sequence_classification import SequenceClassification


def _study(directions: list[str], points: list[tuple[float, ...]]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for values in points:
        study.add_trial(
            create_trial(
                values=list(values),
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                user_attrs={"rank_allocation": {"a.query": 1}, "config": {}},
            )
        )
    return study


def test_one_ranking_for_status_report_and_export_in_a_pareto_study() -> None:
    # trial 0 ties trial 1 on accuracy but has more parameters: it is dominated
    study = _study(["maximize", "minimize"], [(0.9, 200.0), (0.9, 100.0), (0.8, 50.0), (0.7, 300.0)])
    order = [t.number for t in ranking.ranked(study)]
    assert order == [1, 2, 0, 3]  # front (best first objective first), then the next front
    assert {t.number for t in ranking.pareto_front(study)} == {t.number for t in study.best_trials}
    assert tables.ranked_trials(study)[0].number == 1
    assert pick_trial(study, None).number == 1
    assert "best trial 1:" in "\n".join(status_lines(study))


def test_single_objective_ties_go_to_the_earlier_trial_as_in_optuna() -> None:
    study = _study(["maximize"], [(0.5,), (0.9,), (0.9,)])
    assert ranking.best(study).number == study.best_trial.number == 1


def test_pivot_separates_not_adapted_from_pruned_away() -> None:
    rows = [
        (1, "l.0.query", 0, "query", 4),
        (1, "l.0.value", 0, "value", 2),
        (2, "l.0.query", 0, "query", 2),
        (2, "l.0.value", 0, "value", 0),
        (2, "l.0.key", 0, "key", 0),
    ]
    frame = pd.DataFrame(rows, columns=["trial", "module", "layer", "module_type", "rank"])
    table = tables.pivot(frame, [1, 2])
    assert table.loc[0, "query"] == 3 and table.loc[0, "value"] == 1
    assert table.loc[0, "key"] == 0  # adapted by trial 2 and pruned away: not averaged with trial 1's absence
    assert pd.isna(tables.pivot(frame, [1]).get("key", pd.Series([float("nan")])).iloc[0])


def test_a_trial_that_predicts_one_class_is_flagged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(SequenceClassification, "_predict", lambda self, logits: logits.argmax(-1) * 0)
    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    spec = load_spec(path)
    url = f"sqlite:///{tmp_path / 't.db'}"
    work(spec, url, Budget(1, None), tmp_path / "artifacts", log=lambda _: None)
    study = optuna.load_study(study_name="t", storage=url)
    assert "single class" in study.trials[0].user_attrs["warnings"][0]
    assert any("WARNING" in line and "single class" in line for line in summary_lines(study))


def test_export_of_a_trial_pruned_trial_says_so(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.setattr(logging.getLogger("adalora_search"), "propagate", True)  # a CLI test may have turned it off
    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    spec = load_spec(path)
    url = f"sqlite:///{tmp_path / 't.db'}"
    work(spec, url, Budget(1, None), tmp_path / "artifacts", log=lambda _: None)
    study = optuna.load_study(study_name="t", storage=url)
    done = study.trials[0]
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params=done.params,
            distributions=done.distributions,
            user_attrs=dict(done.user_attrs, timing={"steps": 4}),
        )
    )
    with caplog.at_level(logging.WARNING):
        out = export_trial(study, tmp_path / "export", number=1)
    assert "is PRUNED at step 4 of 12" in caplog.text
    exported = json.loads((out / "rank_config.json").read_text())
    assert exported["complete"] is False and exported["steps_trained"] == 4
    complete = json.loads((export_trial(study, tmp_path / "export0", number=0) / "rank_config.json").read_text())
    assert complete["complete"] is True


def test_keep_top_k_adapters_in_a_pareto_study_is_refused() -> None:
    data = study_dict(
        study={
            "keep_top_k_adapters": 1,
            "objective": [
                {"metric": "accuracy", "direction": "maximize"},
                {"metric": "trainable_params", "direction": "minimize"},
            ],
        }
    )
    with pytest.raises(UserError) as info:
        parse_spec(yaml.safe_dump(data))
    assert "study.keep_top_k_adapters" in str(info.value)

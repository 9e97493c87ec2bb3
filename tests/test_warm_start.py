"""study.warm_start (issue #34 item 6): a portfolio or an earlier study's best configurations run first."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from conftest import study_dict, write_study

import adalora_search as als
from adalora_search.search import status, warm_start
from adalora_search.search.portfolio import PORTFOLIO
from adalora_search.study.loader import load_spec

EARLIER = study_dict(
    study={"name": "earlier", "n_trials": 3, "sampler": {"type": "random", "seed": 1}, "pruner": {"type": "none"}},
    training={"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}},
    adalora={"target_modules": {"choices": [["query", "value"], ["query", "key", "value"]]}, "lora_alpha": 8.0},
)


def _new(tmp_path, warm, **sections):
    """A study on another search space that warm-starts from ``warm``."""
    data = study_dict(
        study={"name": "new", "n_trials": 4, "sampler": {"type": "random", "seed": 2}, "warm_start": warm},
        training={"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}},
        adalora={
            "target_modules": {"choices": [["query", "key", "value", "dense"], ["key", "value"]]},
            "lora_alpha": {"choices": [8.0, 16.0]},
        },
    )
    for key, value in sections.items():
        data[key] = {**data[key], **value}
    return write_study(tmp_path, data, "new.yaml")


def test_fit_keeps_values_inside_the_space_and_matches_modules_by_kind(tmp_path):
    spec = load_spec(_new(tmp_path, None))
    values = {
        "training.learning_rate": 5e-3,
        "adalora.target_modules": ["self_attn.k_proj", "self_attn.v_proj"],  # Llama's names: key and value
        "adalora.lora_alpha": 8.0,
        "adalora.schedule.unit": "steps",
    }
    assert warm_start.fit(spec, values) == {
        "training.learning_rate": 5e-3,
        "adalora.target_modules": "key,value",
        "adalora.lora_alpha": 8.0,
    }
    assert warm_start.fit(spec, {"training.learning_rate": 0.5, "adalora.lora_alpha": 32.0}) == {}  # outside
    assert warm_start.fit(spec, {"adalora.target_modules": ["q_proj", "o_proj"]}) == {}  # no kind overlap > 1/2
    wide = warm_start.fit(spec, {"adalora.target_modules": ["query", "key", "value", "attention.output.dense"]})
    assert wide == {"adalora.target_modules": "query,key,value,dense"}  # 'dense' names attn_out's tail only
    steps = load_spec(
        _new(
            tmp_path,
            None,
            adalora={"schedule": {"unit": "steps", "t_init": {"low": 1, "high": 3}, "t_final": 3, "delta_t": 2}},
        )
    )
    assert warm_start.fit(steps, {"adalora.schedule.t_init": 0.1, "adalora.schedule.unit": "fraction"}) == {}
    assert warm_start.fit(steps, {"adalora.schedule.t_init": 2, "adalora.schedule.unit": "steps"}) == {
        "adalora.schedule.t_init": 2
    }


def test_the_portfolio_plans_in_order_with_its_origin(tmp_path):
    spec = load_spec(_new(tmp_path, "portfolio", training={"learning_rate": {"low": 1e-3, "high": 5e-2, "log": True}}))
    plan = warm_start.plan(spec)
    assert plan and [origin for _, origin in plan] == [f"portfolio #{i + 1}" for i in range(len(plan))]
    first = PORTFOLIO[0]
    assert plan[0][0]["training.learning_rate"] == first["training.learning_rate"]


def test_an_earlier_studys_best_run_first_once_and_are_named_everywhere(tmp_path):
    earlier = write_study(tmp_path, EARLIER, "earlier.yaml")
    als.run(str(earlier))
    done = optuna.load_study(study_name="earlier", storage=f"sqlite:///{tmp_path / 'earlier.db'}")
    ranked = sorted(done.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: -t.value)
    new = _new(tmp_path, {"from": "earlier.yaml", "top_k": 2})
    check = als.validate(str(new), check_data=False)
    assert check.ok and any("warm start: 2 configuration(s) run first" in line for line in check.summary)
    result = als.run(str(new), n_trials=3)
    trials = result.study.get_trials()
    for t, source in zip(trials[:2], ranked[:2]):
        assert t.user_attrs["warm_start"] == f"earlier trial {source.number}"
        assert t.params["training.learning_rate"] == pytest.approx(source.params["training.learning_rate"])
        # earlier [q, k, v] -> [q, k, v, dense] (kinds overlap 3/4, [k, v] 2/3); [q, v] -> none above 1/2: sampled
        if source.params["adalora.target_modules"] == "query,key,value":
            assert t.params["adalora.target_modules"] == "query,key,value,dense"
    assert "warm_start" not in trials[2].user_attrs
    lines = status.status_lines(result.study)
    assert any(line.startswith("warm start (2 trials run first): trial 0: earlier trial") for line in lines)
    assert [row["warm_start"] for row in status.status_data(result.study)["trials"]][:3] == [
        f"earlier trial {ranked[0].number}",
        f"earlier trial {ranked[1].number}",
        None,
    ]
    assert list(result.table["warm_start"])[:2] == [f"earlier trial {r.number}" for r in ranked[:2]]
    als.report(str(new), out=tmp_path / "report")
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Warm start (study.warm_start): trials 0, 1 ran first" in page
    again = als.run(str(new), n_trials=4)  # resumed: the warm start is not enqueued again
    assert sum("warm_start" in t.user_attrs for t in again.study.get_trials()) == 2


def test_a_warm_start_that_cannot_work_exits_2_naming_the_field(tmp_path):
    missing = _new(tmp_path, {"from": "nowhere.yaml"})
    cmd = [sys.executable, "-m", "adalora_search", "validate", "--no-data", str(missing)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "study.warm_start.from = 'nowhere.yaml': no such study file" in out.stdout + out.stderr
    ran = subprocess.run([*cmd[:3], "run", str(missing)], capture_output=True, text=True)
    assert ran.returncode == 2 and not (tmp_path / "new.db").exists()  # refused before any storage is made
    write_study(tmp_path, EARLIER, "earlier.yaml")
    not_run = als.validate(str(_new(tmp_path, {"from": "earlier.yaml"})), check_data=False)
    assert "no study storage" in str(not_run.error) and "run that study first" in str(not_run.error)
    loss = dict(EARLIER, study={**EARLIER["study"], "name": "by_loss", "objective": {"metric": "eval_loss"}})
    als.run(str(write_study(tmp_path, loss, "by_loss.yaml")))
    other_way = als.validate(str(_new(tmp_path, {"from": "by_loss.yaml"})), check_data=False)
    assert "minimizes its objective, this study maximizes accuracy" in str(other_way.error)
    fixed = _new(  # searches only lora_alpha, over values the earlier study never used
        tmp_path,
        {"from": "by_loss.yaml"},
        study={"objective": {"metric": "eval_loss"}},
        training={"learning_rate": 5e-3},
        adalora={"target_modules": ["query", "value"], "lora_alpha": {"choices": [32.0, 64.0]}},
    )
    fixed_check = als.validate(str(fixed), check_data=False)
    assert "none of its configurations has a value inside this study's space" in str(fixed_check.error)
    grid = als.validate(str(_new(tmp_path, "portfolio", study={"sampler": {"type": "grid"}})), check_data=False)
    assert "study.warm_start: a grid study runs every point" in str(grid.error)


def test_an_earlier_study_in_the_same_storage_and_knobs_left_to_the_sampler_differ(tmp_path):
    """Found by trying it: an earlier study in the same SQLite file deadlocked on its lock (a traceback); the knobs a
    warm-start configuration leaves to the sampler got the same values in every warm-start trial; validate of a
    started study failed once the earlier storage was gone."""
    shared = {"storage": "sqlite:///shared.db"}
    earlier = write_study(tmp_path, {**EARLIER, "study": {**EARLIER["study"], **shared}}, "earlier.yaml")
    als.run(str(earlier))
    new = _new(
        tmp_path, {"from": "earlier.yaml", "top_k": 2}, study=shared, adalora={"lora_alpha": {"low": 4.0, "high": 64.0}}
    )
    result = als.run(str(new), n_trials=2)
    warm = [t for t in result.study.get_trials() if "warm_start" in t.user_attrs]
    assert len(warm) == 2 and warm[0].params["adalora.lora_alpha"] != warm[1].params["adalora.lora_alpha"]
    (tmp_path / "earlier.yaml").unlink()  # the earlier study's file is gone: the started study needs it no more
    assert als.validate(str(new), check_data=False).ok
    assert len(als.run(str(new), n_trials=3).trials) >= 3

"""The SVD-based references beside the best trial, at its final budget: PiSSA, DoRA and EVA (PEFT's)."""

from __future__ import annotations

import optuna
import pytest
from conftest import run_cli, study_dict, write_study

from adalora_search.search.record import StudyRecord
from adalora_search.study.loader import parse_spec
from adalora_search.train import memory

pytestmark = pytest.mark.slow


def test_pissa_dora_and_eva_references_train_at_the_best_trials_budget(tmp_path, monkeypatch, capsys) -> None:
    references = [{"kind": kind, "learning_rate": 5e-3} for kind in ("lora", "pissa", "dora", "eva")]
    adalora = {"target_modules": ["query", "value", "dense"]}  # with BERT's pooler: one input vector per row
    path = write_study(tmp_path, study_dict(study={"n_trials": 1, "references": references}, adalora=adalora))
    code, out = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 0, out
    for kind in ("lora", "pissa", "dora", "eva"):
        assert f"reference {kind}" in out  # a row of the summary table, with its gain
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    refs = StudyRecord.of(study).references
    assert all(refs[k].trained and refs[k].failure is None for k in ("lora", "pissa", "dora", "eva"))
    best = study.best_trial.user_attrs["rank_allocation"]
    uniform = max(1, round(sum(best.values()) / len(best)))
    eva = refs["eva"].rank_allocation
    assert set(eva) <= set(best) and sum(eva.values()) == uniform * len(best)  # the same budget, redistributed
    assert max(eva.values()) <= 2 * uniform  # EvaConfig's rho 2
    lora, dora = (refs[k].trainable_params["final"] for k in ("lora", "dora"))
    assert dora > lora  # DoRA's magnitude vectors on top of the same ranks
    assert refs["pissa"].trainable_params["final"] == lora and not refs["lora"].rank_allocation
    code, out = run_cli(["report", str(path), "--out", str(tmp_path / "report")], monkeypatch, capsys)
    assert code == 0, out
    text = (tmp_path / "report" / "report.md").read_text()
    assert "heatmap_eva.png" in text and "% of their budgets to the same layer" in text
    assert f"(trial {refs['eva'].of_trial}, whose budget it was trained at)" in text


def test_pissa_is_refused_on_a_quantized_base() -> None:
    data = study_dict(study={"references": [{"kind": "eva"}, {"kind": "pissa"}, {"kind": "dora"}]})
    data["model"] = {**data["model"], "quantization": "4bit", "init": "pretrained"}
    spec = parse_spec(__import__("yaml").safe_dump(data))
    problems = [(p.field, p.value) for p in memory.platform_problems(spec, cuda=True)]
    assert ("study.references", "pissa") in problems  # PEFT's pissa_init raises on quantized weights
    assert ("study.references", "dora") not in problems and ("study.references", "eva") not in problems

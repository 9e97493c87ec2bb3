"""Issue #16: an export loads with PEFT alone (no glue) and its fixed-rank LoRA trains (learning rate chosen)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import REPO, causal_study, run_cli, study_dict, tiny_decoder, write_study
from peft import AutoPeftModelForSequenceClassification, PeftConfig, get_peft_model
from transformers import AutoModelForSequenceClassification

from adalora_search.app.session import run_session
from adalora_search.results.export import base_model, export_trial, lora_learning_rate
from adalora_search.results.manifest import ExportManifest, LoraLearningRate
from adalora_search.results.retrain import learning_rates
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec
from adalora_search.study.space import sample
from adalora_search.study.spec import LORA_LEARNING_RATES
from adalora_search.tasks import EvalContext, get_task
from adalora_search.tasks.sequence_classification import Regression, SequenceClassification
from adalora_search.train.assets import resolve_model
from adalora_search.train.data import Split, batches


def _tiny_bert(directory: Path) -> Path:
    """A tiny BERT encoder with weights (no head) and MiniLM's tokenizer: a loadable local checkpoint."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = directory / "tiny-bert"
    torch.manual_seed(0)
    BertModel(
        BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model("minilm-l6")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[optuna.Study, Path, Path]:
    tmp = tmp_path_factory.mktemp("export_use")
    data = study_dict(
        study={
            "n_trials": 2,
            "keep_top_k_adapters": 1,
            "references": [{"kind": "lora", "learning_rate": [1e-3, 1e-2]}],
        },
        model={"name_or_path": str(_tiny_bert(tmp)), "init": "pretrained", "config_overrides": {}},
        training={"learning_rate": {"low": 5e-3, "high": 2e-2, "log": True}},
    )
    path = write_study(tmp, data)
    run_session(str(path), None, None, None, 1, [])
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp / 'study.db'}")
    return study, path, export_trial(study, tmp / "export")


def _evaluate(model: torch.nn.Module, path: Path) -> dict[str, float]:
    """The task's own evaluation of ``model`` on the study's validation split, as the trial was evaluated."""
    spec = load_spec(path)
    data = prepare_data(spec)
    split = data.splits["validation"]
    ctx = EvalContext(
        forward=lambda batch: model(**batch).logits.float(),
        split=split,
        label_names=data.label_names,
        batches=lambda: batches(split, spec.training.eval_batch_size, data.pad_token_id, None),
    )
    with torch.no_grad():
        return get_task(spec.model.task).evaluate(ctx)


def test_exported_adapter_loads_with_no_arguments_and_reproduces_the_trial(exported) -> None:
    study, path, out = exported
    rank_config = json.loads((out / "rank_config.json").read_text())
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(out / "adapter"))
    labels = prepare_data(load_spec(path)).label_names
    assert rank_config["task"] == "classification" and rank_config["label_names"] == labels
    assert model.config.id2label == dict(enumerate(labels))
    assert model.config.label2id == {name: i for i, name in enumerate(labels)}
    scores = _evaluate(model.eval(), path)
    recorded = study.best_trial.user_attrs["metrics"]["final"]
    assert scores["accuracy"] == recorded["accuracy"]
    assert scores["eval_loss"] == pytest.approx(recorded["eval_loss"], rel=1e-6, abs=1e-6)  # every weight came back


def test_every_config_names_a_loadable_base_with_the_task_labels(exported) -> None:
    study, path, out = exported
    labels = json.loads((out / "rank_config.json").read_text())["label_names"]
    for name in ("adapter", "lora", "adalora"):
        config = PeftConfig.from_pretrained(str(out / name))
        assert config.task_type == "SEQ_CLS"
        assert config.base_model_name_or_path == str((out / "base").resolve())  # not the training machine's
        base = AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path)
        assert base.config.id2label == dict(enumerate(labels))
        if name != "adapter":
            get_peft_model(base, config)  # trains from it as it is


def test_export_recommends_the_lora_reference_rate_and_documents_the_trial(exported) -> None:
    study, _, out = exported
    rank_config = json.loads((out / "rank_config.json").read_text())
    reference = study.user_attrs["references"]["lora"]
    assert rank_config["lora_learning_rate"] == {
        "value": reference["learning_rate"],
        "tried": [1e-3, 1e-2],
        "source": "reference lora run of this study",
        "of_trial": reference["of_trial"],
    }
    assert learning_rates(ExportManifest.model_validate(rank_config).lora_learning_rate, None)[0] == [
        reference["learning_rate"]
    ]  # searched on the same data
    best = study.best_trial
    for directory in (out, out / "adapter", out / "lora"):
        card = (directory / "README.md").read_text()
        assert "library_name: peft" in card and "More Information Needed" not in card
        assert f"accuracy = {best.value:.4f}" in card and "training.learning_rate" in card
        assert all(f"| `{module}` | {rank} |" in card for module, rank in rank_config["rank_allocation"].items())
        # how to load it after moving it, with the tool or with PEFT alone (#35 item 5)
        assert "export --relocate NEW_DIR" in card and "PeftModel.from_pretrained(base, ADAPTER_DIR)" in card
        assert "AutoModelForSequenceClassification.from_pretrained(BASE_MODEL_DIR_OR_ID)" in card
        if "reference" in card:
            assert "Against the study's reference runs:" in card and "- this trial vs lora: " in card


def test_base_is_the_named_model_when_it_loads_as_the_trial_built_it(tmp_path: Path) -> None:
    llama = tiny_decoder(tmp_path)
    pretrained = sample(
        load_spec(write_study(tmp_path, causal_study(llama, model={"init": "pretrained"}))), optuna.trial.FixedTrial({})
    )
    assert base_model(pretrained, None, tmp_path / "base", tmp_path / "final") == str(llama.resolve())
    assert not (tmp_path / "base").exists()  # causal LM, no overrides: nothing to copy
    random = pretrained.model_copy(update={"model": pretrained.model.model_copy(update={"init": "random"})})
    assert base_model(random, None, tmp_path / "base", tmp_path / "final") == str(tmp_path / "final")
    saved = {p.name for p in (tmp_path / "base").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= saved


def test_retrain_learning_rates_default_override_and_recommendation() -> None:
    assert learning_rates(LoraLearningRate(), None)[0] == list(LORA_LEARNING_RATES)
    assert learning_rates(LoraLearningRate(value=5e-3, tried=[1e-3, 5e-3]), [2e-3])[0] == [2e-3]
    single = LoraLearningRate(value=5e-3, tried=[5e-3], source="reference lora run of this study")
    assert learning_rates(single, None)[0] == [5e-3, *LORA_LEARNING_RATES]  # not a search: tried first, then the list
    study = optuna.create_study()  # no lora reference stored
    assert lora_learning_rate(study).model_dump(exclude_defaults=True) == {
        "source": f"not searched: retrain chooses from {list(LORA_LEARNING_RATES)}"
    }


def test_chance_level_is_flagged() -> None:
    task = SequenceClassification()
    split = Split({"input_ids": [[1]] * 10, "labels": [0] * 6 + [1] * 2 + [2] * 2})
    names = ["a", "b", "c"]
    majority = task.chance_note({"accuracy": 0.6, "predicted_classes": 2}, split, names)
    assert "equals the majority class's share ('a', 0.6000)" in majority  # says which, not "chance"
    assert "chance level (1/3 classes" in task.chance_note({"accuracy": 0.35, "predicted_classes": 3}, split, names)
    assert "single class" in task.chance_note({"accuracy": 0.2, "predicted_classes": 1}, split, names)
    assert task.chance_note({"accuracy": 0.7, "predicted_classes": 3}, split, names) is None
    # regression's trivial predictor is a constant (#32 item 6): Pearson 0 is flagged, a correlated result is not
    assert "no better than a constant prediction" in Regression().chance_note({"pearson": 0.0}, split, None)
    assert Regression().chance_note({"pearson": 0.8, "eval_loss": 0.1}, split, None) is None


@pytest.mark.slow
def test_retrained_export_learns_on_real_minilm_and_bbc_slice(tmp_path: Path, monkeypatch, capsys) -> None:
    study = yaml.safe_load((REPO / "studies" / "bbc_news_minilm.yaml").read_text())
    study["study"].update(n_trials=1, references=[], keep_top_k_adapters=0, pruner={"type": "none"})
    study["data"].update(max_train_samples=192, max_eval_samples=64)
    # AdaLoRA learns at 3e-2 here (0.87), plain LoRA at that rate predicts the majority class (0.28)
    study["training"].update(epochs=None, max_steps=24, eval_every=8, batch_size=16, learning_rate=3.0e-2)
    study["adalora"].update(
        target_modules=["query", "value"],
        init_r=12,
        target_r=4,
        lora_alpha=32,
        orth_reg_weight=0.1,
        schedule={"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 2},
    )
    study.pop("baselines")
    path = write_study(tmp_path, study)
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    assert run_cli(["export", str(path), "--out", str(tmp_path / "export")], monkeypatch, capsys)[0] == 0
    code, out = run_cli(["retrain", str(tmp_path / "export")], monkeypatch, capsys)
    assert code == 0, out
    accuracy = float(re.search(r"fixed-rank LoRA \(exported\).*? accuracy\s+([0-9.]+)", out).group(1))
    assert accuracy > 0.5, out  # 5 topics: chance is 0.2, the majority class about 0.23
    assert "WARNING" not in out and "learning rates tried (validation accuracy)" in out
    code, out = run_cli(["retrain", str(tmp_path / "export"), "--learning-rate", "3e-2"], monkeypatch, capsys)
    assert code == 0 and "WARNING: the exported LoRA at learning rate 0.03: " in out, out
    assert "single class" in out or "majority class" in out  # the trial's own rate, as the old default trained it

"""Small pure functions the report and the engine rest on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adalora_search.results.plots import _pareto
from adalora_search.results.tables import layer_index, module_type
from adalora_search.tasks.sequence_classification import Regression, SequenceClassification
from adalora_search.train.data import Split, batches


@pytest.mark.parametrize(
    "name, kind, layer",
    [
        ("bert.encoder.layer.3.attention.self.query", "query", 3),
        ("bert.encoder.layer.0.attention.output.dense", "attn_out", 0),
        ("bert.encoder.layer.11.intermediate.dense", "ffn_in", 11),
        ("bert.encoder.layer.11.output.dense", "ffn_out", 11),
        ("bert.pooler.dense", "pooler", -1),
        ("model.layers.7.self_attn.k_proj", "key", 7),
        ("model.layers.7.self_attn.o_proj", "attn_out", 7),
        ("model.layers.2.mlp.gate_proj", "ffn_gate", 2),
        ("model.layers.2.mlp.up_proj", "ffn_in", 2),
        ("model.layers.2.mlp.down_proj", "ffn_out", 2),
        ("transformer.h.5.attn.c_attn", "qkv", 5),
        ("transformer.h.5.attn.c_proj", "attn_out", 5),
        ("transformer.h.5.mlp.c_fc", "ffn_in", 5),
        ("transformer.h.5.mlp.c_proj", "ffn_out", 5),
        ("encoder.block.4.layer.0.SelfAttention.v", "value", 4),
        ("some.custom.proj", "custom.proj", -1),
    ],
)
def test_module_type_and_layer_index(name: str, kind: str, layer: int) -> None:
    assert module_type(name) == kind
    assert layer_index(name) == layer


def test_pareto_front_of_metric_against_parameters() -> None:
    points = np.array([[10.0, 0.5], [20.0, 0.7], [15.0, 0.6], [25.0, 0.65], [12.0, 0.4]])
    assert _pareto(points, maximize=True).tolist() == [[10.0, 0.5], [15.0, 0.6], [20.0, 0.7]]
    # minimising the metric (a loss): more parameters only count when the loss is lower
    assert _pareto(np.array([[10.0, 0.5], [20.0, 0.3], [30.0, 0.4]]), maximize=False).tolist() == [
        [10.0, 0.5],
        [20.0, 0.3],
    ]


def test_classification_and_regression_scores() -> None:
    scores = SequenceClassification().scores(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    assert scores["accuracy"] == 0.75 and scores["predicted_classes"] == 3
    assert 0 < scores["f1_macro"] < 1 and 0 < scores["mcc"] < 1
    constant = SequenceClassification().scores(np.array([1, 1, 1]), np.array([0, 1, 2]))
    assert constant["mcc"] == 0 and constant["predicted_classes"] == 1
    assert Regression().scores(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))["spearman"] == pytest.approx(1.0)
    assert Regression().scores(np.ones(3), np.array([1.0, 2.0, 3.0])) == {"pearson": 0.0, "spearman": 0.0}


def test_regression_correlations_equal_scipys() -> None:
    """Pearson and Spearman (with a tie) against SciPy's own on a fixed input, not only their range."""
    from scipy import stats

    predictions = np.array([0.1, 0.9, 0.4, 0.4, 2.5, -1.0, 0.7])
    labels = np.array([0.0, 1.0, 0.5, 0.2, 2.0, -0.5, 1.5])
    scores = Regression().scores(predictions, labels)
    assert scores["pearson"] == pytest.approx(stats.pearsonr(predictions, labels)[0], abs=1e-12)
    assert scores["spearman"] == pytest.approx(stats.spearmanr(predictions, labels)[0], abs=1e-12)
    assert scores["pearson"] == pytest.approx(np.corrcoef(predictions, labels)[0, 1], abs=1e-12)
    assert scores["pearson"] != pytest.approx(scores["spearman"], abs=1e-3)  # the input tells the two apart


def test_batches_pad_per_batch_and_cover_every_row_once() -> None:
    split = Split(
        {
            "input_ids": [[1] * n for n in (3, 7, 2, 5, 4)],
            "labels": [0, 1, 0, 1, 0],
            "token_type_ids": [[0] * n for n in (3, 7, 2, 5, 4)],
        }
    )
    fixed = list(batches(split, 2, pad_id=9, shuffle_seed=None))
    assert [b["input_ids"].shape for b in fixed] == [torch.Size([2, 3]), torch.Size([2, 5]), torch.Size([1, 7])]
    assert fixed[0]["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert fixed[0]["input_ids"][0].tolist() == [1, 1, 9]  # padded with pad_id, grouped by length
    shuffled = list(batches(split, 2, pad_id=9, shuffle_seed=3))
    assert sorted(int(m.sum()) for b in shuffled for m in b["attention_mask"]) == [2, 3, 4, 5, 7]
    tokens = Split({"input_ids": [[1, 2, 3], [4]], "labels": [[5, -100, 6], [7]]})
    (batch,) = batches(tokens, 2, pad_id=0, shuffle_seed=None)
    assert batch["labels"].tolist() == [[7, -100, -100], [5, -100, 6]]  # token labels padded with -100
    scores = Split({"input_ids": [[1], [2]], "labels": [0.5, 1.5]})
    assert next(batches(scores, 2, 0, None))["labels"].dtype == torch.float


def test_sampling_a_searched_spec_serialises_every_knob_form_cleanly() -> None:
    import warnings

    import optuna
    from conftest import REPO

    from adalora_search.study.loader import load_spec
    from adalora_search.study.space import sample

    spec = load_spec(REPO / "studies" / "bbc_news_minilm.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic warns when a union member is serialised as the wrong form
        dumped = spec.adalora.model_dump()
        cfg = sample(
            spec,
            optuna.trial.FixedTrial(
                {
                    "training.learning_rate": 0.01,
                    "adalora.target_modules": "query,value",
                    "adalora.init_r": 12,
                    "adalora.target_r": 4,
                    "adalora.lora_alpha": 16.0,
                    "adalora.schedule.t_init": 0.1,
                    "adalora.schedule.t_final": 0.2,
                    "adalora.schedule.delta_t": 3,
                    "adalora.orth_reg_weight": 0.1,
                }
            ),
        )
    assert dumped["init_r"] == {"choices": [12, 16]}
    assert cfg.adalora.schedule.delta_t == 3 and cfg.adalora.target_modules == ["query", "value"]


def test_a_regression_no_better_than_a_constant_is_flagged() -> None:
    """#32 item 6: a best trial with validation Pearson -0.03 and an MSE worse than predicting the mean was exported
    and described with no warning."""
    from adalora_search.tasks import get_task
    from adalora_search.train.data import Split

    split = Split({"input_ids": [[1]] * 4, "labels": [0.0, 1.0, 2.0, 3.0]})  # variance 1.25
    regression = get_task("regression")
    assert "no better than a constant prediction" in regression.chance_note(
        {"pearson": -0.03, "eval_loss": 0.5}, split, None
    )
    assert "MSE 1.2500" in regression.chance_note(
        {"pearson": 0.6, "eval_loss": 1.30}, split, None
    )  # worse than the mean
    assert regression.chance_note({"pearson": 0.8, "eval_loss": 0.3}, split, None) is None


def test_a_study_shorter_than_the_samplers_start_up_is_said_to_be_random_search() -> None:
    """#35 item 3: a study with fewer trials than TPE's start-up trials is random search; validate and run say so."""
    from adalora_search.study.samplers import GP, TPE, Random, SamplerSpec, random_search_note

    assert "this study is random search" in random_search_note(SamplerSpec(TPE()), 8)
    assert "n_trials 12 leaves 10 sampled trials" in random_search_note(SamplerSpec(TPE()), 12, n_enqueued=2)
    assert random_search_note(SamplerSpec(TPE()), 11) is None
    assert random_search_note(SamplerSpec(GP(n_startup_trials=4)), 5) is None
    assert random_search_note(SamplerSpec(Random()), 3) is None  # random search by name
    assert random_search_note(SamplerSpec(TPE()), None) is None  # a timeout, no trial count


def test_status_shows_the_reference_phase_while_references_run() -> None:
    """#35 item 7: during 26 minutes of reference runs status said 'all 4 trials finished' and nothing else."""
    import time

    import optuna

    from adalora_search.search.status import reference_phase, status_data

    study = optuna.create_study()
    assert reference_phase(study) is None
    study.set_user_attr("references_planned", ["lora", "pissa", "dora"])
    study.set_user_attr("references", {"lora": {"metrics": {"final": {"accuracy": 0.9}}}})
    study.set_user_attr("reference_running", {"kind": "pissa", "since": time.time() - 60})
    assert reference_phase(study) == "references: done lora; running pissa (1.0 min); to come dora"
    assert status_data(study)["references_phase"] == reference_phase(study)
    study.set_user_attr("reference_running", None)
    assert reference_phase(study) == "references: done lora; to come pissa, dora"
    study.set_user_attr("references", {k: {"metrics": {"final": {"accuracy": 0.9}}} for k in ("lora", "pissa", "dora")})
    assert reference_phase(study) is None


def test_each_reference_gets_a_verdict_on_validation_and_test_in_examples() -> None:
    """#35 item 1: the headline said AdaLoRA won when uniform LoRA, DoRA and full fine-tuning beat it on test."""
    from optuna.trial import TrialState

    from adalora_search.search.record import ReferenceResult, StudyRecord, TrialRecord
    from adalora_search.search.summary import verdicts

    best = TrialRecord(
        number=9, state=TrialState.COMPLETE, values=[0.919], params={}, config=None,
        metrics={"final": {"accuracy": 0.9190, "eval_loss": 0.28}, "test": {"accuracy": 0.8905}},
        rank_allocation={}, budget_curve=[], history=[], trainable_params={}, timing={}, total_steps=None,
    )  # fmt: skip
    refs = {
        "lora": ReferenceResult(metrics={"final": {"accuracy": 0.9048}, "test": {"accuracy": 0.9048}}),
        "pissa": ReferenceResult(metrics={"final": {"accuracy": 0.9190}, "test": {"accuracy": 0.8810}}),
    }
    stored = StudyRecord(
        "classification", [], refs, None, [], {}, {}, None, split_sizes={"validation": 210, "test": 210}
    )
    lora, pissa = verdicts(best, stored, "accuracy")
    assert lora == (
        "best trial vs lora: ahead on validation by 1.4 pt (3 of 210 examples); "
        "behind on test by 1.4 pt (3 of 210 examples)"
    )
    assert pissa == (
        "best trial vs pissa: level on validation (within one of its 210 examples); "
        "ahead on test by 0.9 pt (2 of 210 examples)"
    )
    no_sizes = StudyRecord("classification", [], refs, None, [], {}, {}, None)
    assert (
        verdicts(best, no_sizes, "accuracy")[0]
        == "best trial vs lora: ahead on validation by 1.4 pt accuracy; behind on test by 1.4 pt accuracy"
    )
    loss = {"lora": ReferenceResult(metrics={"final": {"eval_loss": 0.30}})}
    assert verdicts(best, StudyRecord("classification", [], loss, None, [], {}, {}, None), "eval_loss") == [
        "best trial vs lora: ahead on validation by 0.020 eval_loss"
    ]


def test_importances_figure_has_one_title(tmp_path, monkeypatch) -> None:
    """#35 item 8: importances.png printed Optuna's title and ours on top of each other."""
    import warnings

    import optuna

    from adalora_search.results import plots

    seen = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.setdefault("fig", fig) and path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2 + 0.1 * t.suggest_float("y", 0, 1), n_trials=20)
        plots._importances(study, tmp_path / "i.png")
    ax = seen["fig"].axes[0]
    assert ax.get_title(loc="left") == "" and ax.get_title().startswith("Parameter importances")


def test_report_on_a_study_without_a_complete_trial_prints_only_its_own_lines(tmp_path) -> None:
    """#35 item 6: report on a study with no complete trial printed Optuna's and matplotlib's messages."""
    import subprocess
    import sys

    import optuna

    study = optuna.create_study(study_name="x", storage=f"sqlite:///{tmp_path / 'x.db'}")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    cmd = [sys.executable, "-m", "adalora_search", "report", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]
    out = subprocess.run([*cmd, "--study", "x", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "r" / "report.html").is_file()
    assert "There are no complete trials" not in out.stderr and "Warning" not in out.stderr, out.stderr


def test_every_task_names_its_invariants_and_validate_prints_them(tmp_path, monkeypatch, capsys) -> None:
    """#32: validate prints which invariants it checked; a task registered without any fails here."""
    from conftest import run_cli, study_dict, write_study

    from adalora_search.tasks import TASKS

    assert all(task.invariants for task in TASKS.values()), [n for n, t in TASKS.items() if not t.invariants]
    code, out = run_cli(["validate", str(write_study(tmp_path, study_dict()))], monkeypatch, capsys)
    assert code == 0 and "invariants checked on the data and model: every length fits the model's positions; " in out
    assert "a row's logits do not depend on its batch" in out


def test_the_data_cache_key_follows_the_code_that_made_the_data(monkeypatch) -> None:
    """#36 item 4: the cache key held a hand-bumped version: an edited encode silently reused stale token ids."""
    import inspect

    from adalora_search.tasks import get_task
    from adalora_search.train import data

    task = get_task("question_answering")
    before = data.code_identity(task)
    assert before == data.code_identity(task) and before != data.code_identity(get_task("classification"))
    real = inspect.getsource

    def edited(module):
        text = real(module)
        return text + "\n# an edit" if module.__name__ == "adalora_search.tasks.question_answering" else text

    monkeypatch.setattr(inspect, "getsource", edited)
    assert data.code_identity(task) != before


def test_the_trivial_predictor_is_the_floor_beside_every_result() -> None:
    """#35 item 2 / #32 item 6: 'is 0.72 any good?' The training majority (classification) or the training mean
    (regression), scored on validation and test, and the validation split's class shares."""
    from adalora_search.tasks import get_task
    from adalora_search.train.data import Split

    def split(labels):
        return Split({"input_ids": [[1]] * len(labels), "labels": labels})

    splits = {"train": split([0, 0, 0, 1, 2]), "validation": split([0, 1, 1, 2]), "test": split([0, 0, 1, 2])}
    floor = get_task("classification").trivial(splits, ["a", "b", "c"])
    assert floor["label"] == "always 'a'" and floor["shares"] == {"b": 0.5, "a": 0.25, "c": 0.25}
    assert floor["validation"]["accuracy"] == 0.25 and floor["test"]["accuracy"] == 0.5
    assert floor["validation"]["mcc"] == 0.0 and "predicted_classes" not in floor["validation"]
    scores = {"train": split([1.0, 3.0]), "validation": split([0.0, 4.0])}
    regression = get_task("regression").trivial(scores, None)
    assert regression["label"] == "always the training mean 2" and regression["validation"] == {
        "pearson": 0.0,
        "spearman": 0.0,
        "eval_loss": 4.0,
    }


def test_a_tie_between_learning_rates_is_broken_on_eval_loss() -> None:
    """#32 item 6: retrain (and the references) broke a tie on the main metric by the order the rates were tried."""
    from adalora_search.results.references import pick_best
    from adalora_search.search.record import ReferenceResult
    from adalora_search.tasks import get_task

    def run(lr, accuracy, loss):
        return ReferenceResult(metrics={"final": {"accuracy": accuracy, "eval_loss": loss}}, learning_rate=lr)

    task = get_task("classification")
    assert pick_best([run(1e-3, 0.5, 1.2), run(1e-2, 0.5, 0.9)], task).learning_rate == 1e-2
    assert pick_best([run(1e-3, 0.6, 1.2), run(1e-2, 0.5, 0.9)], task).learning_rate == 1e-3
    assert pick_best([run(1e-3, 0.5, 0.8), run(1e-2, 0.5, 0.9)], task).learning_rate == 1e-3

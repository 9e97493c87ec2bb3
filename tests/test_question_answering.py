"""Issue #22 part 3: ``task: question_answering`` (SQuAD format): answers checked against the context, windows
with doc_stride and offsets, span decoding, SQuAD v1.1/v2.0 metrics, bad input, and validate -> run -> report ->
export -> retrain with the export loaded by ``AutoPeftModelForQuestionAnswering`` alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import run_cli, study_dict, write_study
from peft import AutoPeftModelForQuestionAnswering

from adalora_search.app.session import run_session
from adalora_search.errors import UserError
from adalora_search.results.export import export_trial
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec
from adalora_search.study.spec import StudySpec
from adalora_search.tasks import EvalContext, get_task
from adalora_search.tasks.question_answering import _predict
from adalora_search.tasks.squad import squad_scores
from adalora_search.train.assets import load_packaged, resolve_model
from adalora_search.train.data import Split, batches

QA = get_task("question_answering")


def qa_study(**sections) -> dict:
    data = study_dict(
        model={"task": "question_answering"},
        study={"objective": {"metric": "f1", "direction": "maximize"}},
        data={"source": "bbc-cloze-qa", "text_fields": None, "max_length": 64, "doc_stride": 16},
    )
    for key, value in sections.items():
        data[key] = {**data[key], **value}
    return data


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))


def _rows(contexts: list[str], answers: list[tuple[str, int]], question: str = "Who?") -> dict:
    return {
        "question": [question] * len(contexts),
        "context": contexts,
        "answers": [{"text": [t], "answer_start": [s]} for t, s in answers],
    }


def test_packaged_cloze_answers_stand_in_their_context_at_answer_start() -> None:
    rows = load_packaged("bbc-cloze-qa")["train"]
    assert len(rows) > 1000
    for row in rows.select(range(200)):
        (text,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
        assert row["context"][start : start + len(text)] == text and "_____" in row["question"]
    negatives = load_packaged("bbc-cloze-qa-v2")["train"]
    assert 0 < sum(not a["text"] for a in negatives["answers"]) < len(negatives) / 2


def test_windows_share_doc_stride_tokens_and_their_labels_point_at_the_answer() -> None:
    spec = StudySpec.model_validate(qa_study(data={"max_length": 32, "doc_stride": 8}))
    tok = _tokenizer()
    context = " ".join(f"w{i}" for i in range(60)) + " Paris is here. " + " ".join(f"v{i}" for i in range(40))
    rows = QA.select(_rows([context], [("Paris", context.index("Paris"))]), spec.data, "validation")
    encoded = QA.encode(rows, spec.data, tok, None, "validation")
    windows = encoded.columns
    assert len(windows["input_ids"]) > 3 and encoded.truncated == 1 and encoded.examples == 1
    assert all(len(ids) <= 32 for ids in windows["input_ids"])
    found = 0
    for ids, (start, end), offsets in zip(windows["input_ids"], windows["labels"], windows["offsets"]):
        if start:
            found += 1
            assert context[offsets[start][0] : offsets[end][1]] == "Paris"
            assert tok.decode(ids[start : end + 1]) == "paris"
        else:
            assert end == 0 and ids[0] == tok.cls_token_id  # the window does not hold the answer: CLS
    assert found >= 1
    # consecutive windows share doc_stride context tokens
    first, second = ([o for o in w if o != [-1, -1]] for w in windows["offsets"][:2])
    assert first[-8:] == second[:8]


def test_answers_that_are_not_at_answer_start_are_refused_with_count_and_first_row() -> None:
    spec = StudySpec.model_validate(qa_study())
    ctx = "The match was played in Paris on Sunday afternoon before a full crowd."
    good, off_by_one = ("Paris", ctx.index("Paris")), ("Paris", ctx.index("Paris") + 1)
    with pytest.raises(UserError, match=r"data.answers_field = 'answers': 2 of 3 rows of the train split have an "):
        QA.select(_rows([ctx] * 3, [good, off_by_one, ("Lyon", 3)]), spec.data, "train")
    with pytest.raises(UserError, match=r"1 of 2 rows .* have no answer; .*version_2_with_negative: true"):
        rows = _rows([ctx] * 2, [good, good])
        rows["answers"][1] = {"text": [], "answer_start": []}
        QA.select(rows, spec.data, "train")
    swapped = {"question": [ctx], "context": ["Where?"], "answers": [{"text": ["Where"], "answer_start": [0]}]}
    with pytest.raises(UserError, match=r"data.context_field = 'context': 1 of 1 rows .* context no longer than"):
        QA.select(swapped, spec.data, "train")
    with pytest.raises(UserError, match=r"is not SQuAD's answers"):
        QA.select({**_rows([ctx], [good]), "answers": ["Paris"]}, spec.data, "train")
    listed = {**_rows([ctx], [good]), "answers": [[{"text": "Paris", "answer_start": good[1]}]]}
    assert QA.select(listed, spec.data, "train")["answer_start"] == [[good[1]]]  # SQuAD JSON's list of dicts


def test_squad_metrics_follow_the_official_scripts() -> None:
    scores = squad_scores(["the Eiffel Tower", "Paris France", "", "x"], [["Eiffel tower!"], ["Paris"], [], ["y"]])
    # EM: 1, 0, 1 (v2.0: no answer and an empty prediction), 0; F1: 1, 2/3 (P 1/2, R 1), 1, 0
    assert scores == {"exact_match": pytest.approx(0.5), "f1": pytest.approx((1 + 2 / 3 + 1 + 0) / 4)}


def test_decoding_takes_the_best_span_across_windows_and_the_null_answer_in_v2() -> None:
    offsets = [[-1, -1], [0, 5], [6, 11], [12, 17], [-1, -1]]
    split = Split(
        {
            "input_ids": [[0] * 5] * 3,
            "example": [0, 0, 0],
            "offsets": [offsets] * 3,
            "context": ["alpha bravo charl"] * 3,
            "answers": [["bravo"]] * 3,
        }
    )
    first, second, third = np.zeros((5, 2)), np.full((5, 2), -9.0), np.full((5, 2), -10.0)
    first[1] = [2.0, 1.0]  # "alpha": 3 in the first window
    second[2, 0], second[3, 1] = 3.0, 2.0  # "bravo charl": 5 in the second
    third[3, 0], third[1, 1] = 10.0, 10.0  # an end before its start (20) is never an answer
    scores = {0: first, 1: second, 2: third}
    spec = StudySpec.model_validate(qa_study()).data
    assert _predict(split, scores, spec) == (["bravo charl"], [["bravo"]])
    assert _predict(split, scores, spec.model_copy(update={"max_answer_length": 1}))[0] == ["alpha"]
    v2 = spec.model_copy(update={"version_2_with_negative": True})
    assert _predict(split, scores, v2)[0] == ["bravo charl"]  # the null score is the windows' lowest (-20)
    for window in scores.values():
        window[0] = 6.0  # null score 12 everywhere: 7 above the best span
    assert _predict(split, scores, v2)[0] == [""]
    assert _predict(split, scores, v2.model_copy(update={"null_score_diff_threshold": 10.0}))[0] == ["bravo charl"]


def test_bad_question_answering_settings_exit_2_naming_the_field(tmp_path: Path, monkeypatch, capsys) -> None:
    cases = [
        (qa_study(data={"doc_stride": 64}), "data.doc_stride = 64: must be < data.max_length (64)"),
        (qa_study(data={"context_field": "question"}), "is the question_field too"),
        (qa_study(data={"answers_field": "nope"}), "nope"),
        (qa_study(data={"source": "bbc-cloze-qa-v2"}), "version_2_with_negative: true"),
        (qa_study(data={"max_length": 16, "doc_stride": 8}), "leaves room for doc_stride (8) context tokens"),
        (study_dict(data={"doc_stride": 16}), "data.doc_stride"),  # classification: not its field
    ]
    for i, (data, expected) in enumerate(cases):
        code, out = run_cli(["validate", str(write_study(tmp_path, data, f"{i}.yaml"))], monkeypatch, capsys)
        assert code == 2 and expected in out and "Traceback" not in out, (i, out)


def _evaluate(model: torch.nn.Module, path: Path) -> dict[str, float]:
    spec = load_spec(path)
    data = prepare_data(spec)
    split = data.splits["validation"]
    ctx = EvalContext(
        # through the base model with the adapters injected: PeftModelForQuestionAnswering.forward does not pass
        # token_type_ids on (peft_model.py), and BERT-style models read the question / context segments from them
        forward=lambda batch: QA.logits(model.get_base_model()(**batch)).float(),
        split=split,
        label_names=None,
        batches=lambda: batches(split, spec.training.eval_batch_size, data.pad_token_id, None, collate=QA.collate),
        data=spec.data,
    )
    with torch.no_grad():
        return QA.evaluate(ctx)


@pytest.mark.slow
def test_question_answering_study_runs_reports_exports_and_the_export_reproduces_the_trial(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    data = qa_study(
        study={"n_trials": 1, "keep_top_k_adapters": 1, "references": [{"kind": "dora", "learning_rate": 5e-3}]},
        data={"max_train_samples": 64, "max_eval_samples": 24},
        training={"max_steps": 8, "eval_every": 4},
    )
    path = write_study(tmp_path, data)
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0 and "windows" in out, out
    run_session(str(path), None, None, None, 1, [])
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    final = study.best_trial.user_attrs["metrics"]["final"]
    assert set(final) >= {"f1", "exact_match", "eval_loss"} and 0 <= final["exact_match"] <= final["f1"] <= 1
    dora = study.user_attrs["references"]["dora"]
    assert set(dora["metrics"]["final"]) >= {"f1", "exact_match"} and dora["learning_rate"] is not None  # trained

    code, out = run_cli(["report", str(path)], monkeypatch, capsys)
    assert code == 0, out
    out_dir = export_trial(study, tmp_path / "export")
    assert json.loads((out_dir / "rank_config.json").read_text())["task"] == "question_answering"
    model = AutoPeftModelForQuestionAnswering.from_pretrained(str(out_dir / "adapter")).eval()
    scores = _evaluate(model, path)
    assert scores["f1"] == pytest.approx(final["f1"], abs=1e-9)
    assert scores["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)

    code, out = run_cli(["retrain", str(out_dir), "--learning-rate", "5e-3"], monkeypatch, capsys)
    assert code == 0, out


def test_answers_with_the_space_beside_them_label_only_the_answer_tokens(tmp_path: Path) -> None:
    """Field case case42: answers exported with the space beside the word (answer_start on the space) labelled
    the neighbouring word's token too in 12 of 18 training windows; they are trimmed, offsets moved, first."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(Path(__file__).parent / "field_cases" / "case42", tmp_path / "case42")
    spec = load_spec(tmp_path / "case42" / "study.yaml")
    data = prepare_data(spec)
    tok = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    rows = [json.loads(line) for line in (tmp_path / "case42" / "train.jsonl").read_text().splitlines()]
    assert sum(r["answers"]["text"][0] != r["answers"]["text"][0].strip() for r in rows) == 12  # the case as built
    train = data.splits["train"].columns
    labelled = 0
    for ids, (start, end) in zip(train["input_ids"], train["labels"]):
        if start == end == ids.index(tok.cls_token_id):
            continue
        text = tok.decode(ids)
        row = next(r for r in rows if f"[CLS] {r['question'].lower()} [SEP]" in text)
        assert tok.decode(ids[start : end + 1]) == row["answers"]["text"][0].strip().lower()
        labelled += 1
    assert labelled == len(rows)  # every answer fits its one window

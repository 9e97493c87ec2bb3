"""Issue #22 part 2: ``task: seq2seq`` (encoder-decoder text-to-text): encoding, batches, ROUGE, the heatmap's
encoder / decoder / cross-attention columns, bad input, and validate -> run -> report -> export -> retrain with the
export loaded by ``AutoPeftModelForSeq2SeqLM`` alone.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import optuna
import pytest
import torch
from conftest import run_cli, study_dict, tiny_decoder, write_study
from peft import AutoPeftModelForSeq2SeqLM

from adalora_search.app.session import run_session
from adalora_search.errors import UserError
from adalora_search.results.export import export_trial
from adalora_search.results.tables import module_name
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec
from adalora_search.study.spec import StudySpec
from adalora_search.tasks import EvalContext, get_task
from adalora_search.tasks.seq2seq import DROPPED_EMPTY, rouge
from adalora_search.train.assets import resolve_model
from adalora_search.train.data import Split, batches
from adalora_search.train.modeling import load_tokenizer


@functools.cache
def tiny_bart() -> Path:
    """A tiny BART config (2 + 2 layers, d_model 64) in MiniLM's vocabulary, written once: built with random
    weights (``init: random``) and read with MiniLM's tokenizer (``model.tokenizer``).
    """
    from transformers import BartConfig

    path = Path(tempfile.mkdtemp(prefix="tiny-bart-"))
    BartConfig(
        vocab_size=30522,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
        decoder_start_token_id=102,
        forced_eos_token_id=102,
    ).save_pretrained(path)
    return path


def seq2seq_study(**sections) -> dict:
    """A headline-generation study on a tiny random BART (``tiny_bart``) with MiniLM's tokenizer."""
    data = study_dict(
        model={
            "name_or_path": str(tiny_bart()),
            "tokenizer": "minilm-l6",
            "init": "random",
            "task": "seq2seq",
            "config_overrides": {},
        },
        study={"objective": {"metric": "eval_loss", "direction": "minimize"}},
        data={
            "source": "bbc-headlines",
            "text_fields": None,
            "source_field": "lead",
            "target_field": "headline",
            "max_length": 40,
            "max_target_length": 16,
        },
        training={"eval_batch_size": 16, "generation": {"max_new_tokens": 8, "max_samples": 8}},
        adalora={"target_modules": ["q_proj", "v_proj", "fc1"]},
    )
    for key, value in sections.items():
        data[key] = {**data[key], **value}
    return data


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))


def test_encode_uses_the_tokenizers_target_ids_counts_cuts_and_drops_empty_rows() -> None:
    spec = StudySpec.model_validate(seq2seq_study(data={"source_prefix": "headline: "}))
    tok, task = _tokenizer(), get_task("seq2seq")
    long = "word " * 100
    rows = {"source": ["Shares rose.", long, "", "x"], "target": ["Markets up", "A title", "t", " "]}
    encoded = task.encode(rows, spec.data, tok, None, "train")
    assert encoded.dropped == {DROPPED_EMPTY: 2} and encoded.truncated == 1
    assert encoded.columns["input_ids"][0] == tok("headline: Shares rose.")["input_ids"]
    assert encoded.columns["labels"][0] == tok(text_target="Markets up")["input_ids"]
    assert len(encoded.columns["input_ids"][1]) == 40 and encoded.columns["input_ids"][1][-1] == tok.sep_token_id
    assert encoded.columns["reference"] == ["Markets up", "A title"]
    with pytest.raises(UserError, match=r"data.target_field = 'headline': every value of the train split is empty"):
        task.select({"lead": ["a", "b"], "headline": ["", None]}, spec.data, "train")


def test_batches_pad_targets_to_their_own_width_with_ignore_and_count_target_tokens() -> None:
    split = Split({"input_ids": [[1, 2, 3, 4], [5, 6]], "labels": [[7], [8, 9, 10]], "reference": ["a", "b"]})
    task = get_task("seq2seq")
    batch = next(batches(split, 2, 0, None, collate=task.collate))
    assert batch["input_ids"].tolist() == [[5, 6, 0, 0], [1, 2, 3, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[8, 9, 10], [7, -100, -100]]
    assert task.loss_terms(batch) == 4


def test_rouge_is_rouge_scores_stemmed_f_measure_with_sentences_as_lines() -> None:
    from rouge_score import rouge_scorer

    predictions, references = ["The cats were running home. Then slept."], ["A cat runs home. It sleeps."]
    scores = rouge(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    expected = scorer.score("A cat runs home.\nIt sleeps.", "The cats were running home.\nThen slept.")
    assert scores == {key: pytest.approx(value.fmeasure) for key, value in expected.items()}
    assert scores["rouge1"] > rouge(predictions, references)["rouge2"] > 0  # stemmed: cat(s), run(ning), home


def test_heatmap_keeps_encoder_decoder_and_cross_attention_apart() -> None:
    bart = {
        "model.encoder.layers.0.self_attn.q_proj": 4,
        "model.decoder.layers.0.self_attn.q_proj": 2,
        "model.decoder.layers.0.encoder_attn.q_proj": 3,
        "model.decoder.layers.0.fc1": 1,
    }
    from adalora_search.results.tables import allocation_grid

    grid = allocation_grid(bart)
    assert list(grid.columns) == [
        "encoder self_attn.q_proj",
        "decoder self_attn.q_proj",
        "decoder encoder_attn.q_proj",
        "decoder fc1",
    ]
    assert grid.loc[0].tolist() == [4, 2, 3, 1]
    t5 = "decoder.block.1.layer.1.EncDecAttention.q"
    assert module_name(t5, stacks=True) == "decoder layer.1.EncDecAttention.q"
    assert module_name("bert.encoder.layer.0.attention.self.query") == "attention.self.query"  # BERT: one stack


def test_a_decoder_only_model_for_seq2seq_and_an_encoder_decoder_for_causal_lm_exit_2(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    decoder = tiny_decoder(tmp_path)
    data = seq2seq_study(model={"name_or_path": str(decoder), "tokenizer": None})
    code, out = run_cli(["validate", str(write_study(tmp_path, data, "a.yaml"))], monkeypatch, capsys)
    assert code == 2 and "model.task = 'seq2seq'" in out and "not an encoder-decoder model" in out
    assert "Traceback" not in out
    from conftest import causal_study

    data = causal_study(tiny_bart())
    data["model"]["tokenizer"] = "minilm-l6"
    code, out = run_cli(["validate", str(write_study(tmp_path, data, "b.yaml"))], monkeypatch, capsys)
    assert code == 2 and "bart is an encoder-decoder model" in out and "model.task: seq2seq" in out


def test_bad_seq2seq_fields_exit_2_naming_the_field(tmp_path: Path, monkeypatch, capsys) -> None:
    cases = [
        (seq2seq_study(data={"target_field": None}), "data.target_field"),
        (seq2seq_study(data={"target_field": "lead"}), "is the source_field too"),
        (seq2seq_study(data={"target_field": "nope"}), "nope"),
        (seq2seq_study(data={"text_fields": ["lead"]}), "data.text_fields"),
        (seq2seq_study(study={"pruning_metric": "rougeL"}), "computed after training only"),
        (study_dict(study={"objective": {"metric": "rouge1", "direction": "maximize"}}), "rouge1"),
    ]
    for i, (data, expected) in enumerate(cases):
        code, out = run_cli(["validate", str(write_study(tmp_path, data, f"{i}.yaml"))], monkeypatch, capsys)
        assert code == 2 and expected in out and "Traceback" not in out, (i, out)


def _evaluate(model: torch.nn.Module, path: Path) -> dict[str, float]:
    """The task's evaluation of ``model`` on the study's validation split (ROUGE included), as the trial's."""
    from adalora_search.tasks.batching import Generation

    spec = load_spec(path)
    data, task = prepare_data(spec), get_task("seq2seq")
    split = data.splits["validation"]
    how = Generation(data.pad_token_id, load_tokenizer(spec.model).sep_token_id, 16, torch.device("cpu"), False)
    # teacher forcing through the base model with the adapters injected: PeftModel's AdaLoRA forward adds the
    # orthogonal regularizer whenever labels give a loss, which an adapter loaded for inference cannot (PEFT #571)
    ctx = EvalContext(
        forward=lambda batch: model.get_base_model()(**batch).logits.float(),
        split=split,
        label_names=None,
        tokenizer=data.tokenizer,
        batches=lambda: batches(split, 16, data.pad_token_id, None, collate=task.collate),
        generate=lambda prompts, n: task.generate(model, prompts, n, how),
        generation=spec.training.generation,
        final=True,
    )
    with torch.no_grad():
        return task.evaluate(ctx)


@pytest.mark.slow
def test_seq2seq_study_runs_reports_exports_and_the_export_reproduces_the_trial(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    data = seq2seq_study(
        study={"n_trials": 1, "keep_top_k_adapters": 1, "references": [{"kind": "eva", "learning_rate": 5e-3}]},
        training={"max_steps": 8},
    )
    path = write_study(tmp_path, data)
    run_session(str(path), None, None, None, 1, [])
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trial = study.best_trial
    final = trial.user_attrs["metrics"]["final"]
    assert set(final) >= {"eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum"}
    eva = study.user_attrs["references"]["eva"]
    assert eva.get("failure") is None and eva["metrics"]["final"]["eval_loss"] > 0
    allocation = trial.user_attrs["rank_allocation"]
    assert any(".encoder." in n for n in allocation) and any(
        "encoder_attn" not in n and ".decoder." in n for n in allocation
    )

    code, out = run_cli(["report", str(path)], monkeypatch, capsys)
    assert code == 0, out
    best = (tmp_path / "t_report" / "allocation_best.csv").read_text()
    assert "encoder self_attn.q_proj" in best and "decoder self_attn.q_proj" in best and "decoder fc1" in best

    out_dir = export_trial(study, tmp_path / "export")
    assert json.loads((out_dir / "rank_config.json").read_text())["task"] == "seq2seq"
    model = AutoPeftModelForSeq2SeqLM.from_pretrained(str(out_dir / "adapter")).eval()
    scores = _evaluate(model, path)
    assert scores["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)
    for key in ("rouge1", "rougeL"):
        assert scores[key] == pytest.approx(final[key], abs=1e-9)

    code, out = run_cli(["retrain", str(out_dir), "--learning-rate", "5e-3"], monkeypatch, capsys)
    assert code == 0, out


def test_packaged_minilm_bart_carries_minilm_embeddings_and_tokenizer() -> None:
    from transformers import AutoModel, AutoModelForSeq2SeqLM

    bart = AutoModelForSeq2SeqLM.from_pretrained(resolve_model("minilm-l6-bart"))
    bert = AutoModel.from_pretrained(resolve_model("minilm-l6"))
    words = bert.embeddings.word_embeddings.weight
    assert torch.equal(bart.model.shared.weight, words) and torch.equal(bart.lm_head.weight, words)  # tied
    assert torch.equal(bart.model.decoder.embed_positions.weight[2:], bert.embeddings.position_embeddings.weight)
    tok = load_tokenizer(StudySpec.model_validate(study_dict(model={"name_or_path": "minilm-l6-bart"})).model)
    assert bart.config.decoder_start_token_id == tok.sep_token_id == bart.config.eos_token_id
    assert tok("a b")["input_ids"] == _tokenizer()("a b")["input_ids"]
    assert tok.eos_token_id == tok.sep_token_id  # generation stops where a target ends


def test_generation_ends_at_the_tokenizers_eos_else_the_models() -> None:
    from types import SimpleNamespace

    from adalora_search.tasks.batching import Generation, until_end

    chat = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[5, 7]))
    how = Generation(0, None, 4, torch.device("cpu"), False)
    assert how.ends(chat) == {5, 7} and "eos_token_id" not in how.kwargs()  # None would never stop
    assert until_end([3, 4, 7, 9, 5], how.ends(chat)) == [3, 4]
    assert Generation(0, 2, 4, torch.device("cpu"), False).ends(chat) == {2}
    assert until_end([3, 4], {9}) == [3, 4]


@pytest.mark.parametrize(
    "study, field, limit",
    [
        ("a_long_targets.yaml", "data.max_target_length = 64", "use max_target_length <= 32"),
        ("b_long_generation.yaml", "training.generation.max_new_tokens = 48", "use max_new_tokens <= 31"),
    ],
)
def test_lengths_beyond_the_decoders_positions_are_refused_before_trial_0(
    study: str, field: str, limit: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Field case case41: a target or a generation longer than a 32-position BART passed validate, then every trial
    failed with IndexError (after training, for generation)."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(Path(__file__).parent / "field_cases" / "case41", tmp_path / "case41")
    monkeypatch.chdir(tmp_path / "case41")
    subprocess.run([sys.executable, "make_data.py"], check=True, capture_output=True)
    code, out = run_cli(["validate", study], monkeypatch, capsys)
    assert code == 2 and field in out and limit in out and "Traceback" not in out


def test_a_decoder_only_prompt_and_its_generation_must_fit_the_positions() -> None:
    from adalora_search.train.model_checks import length_problems

    spec = load_spec(Path(__file__).resolve().parents[1] / "studies" / "smollm2_bbc_topic.yaml")  # 96 + 3 tokens
    assert length_problems(spec, 99, encoder_decoder=False) == []
    (problem,) = length_problems(spec, 98, encoder_decoder=False)
    assert problem.field == "training.generation.max_new_tokens" and "use max_new_tokens <= 2" in problem.message
    assert [p.field for p in length_problems(spec, 64, encoder_decoder=False)] == ["data.max_length"]


def test_a_perfect_prediction_scores_perfectly_in_any_script() -> None:
    """#32 invariant 1: ROUGE on Russian or Greek targets scored an identical prediction 0.0 (rouge_score's default
    tokenizer keeps ASCII words only), so a ROUGE objective was 0 for every trial."""
    from adalora_search.tasks.base import imperfect
    from adalora_search.tasks.causal_lm import text_scores
    from adalora_search.tasks.seq2seq import ROUGE, rouge
    from adalora_search.tasks.text_metrics import UnicodeTokenizer

    targets = [
        "Привет, мир: погода хорошая.",
        "Καλημέρα κόσμε!",
        "naïve café au lait",
        "日本語の テキスト",
        "plain English",
    ]
    assert rouge(targets, targets) == dict.fromkeys(ROUGE, 1.0)
    assert text_scores(targets, targets) == {"exact_match": 1.0, "rouge_l": 1.0}
    assert rouge(["Привет мир"], ["Пока мир"])["rouge1"] == pytest.approx(0.5)  # words of any script are words
    assert rouge(["我爱北京天安"], ["我爱北京天安门"])["rougeL"] == pytest.approx(12 / 13)  # unspaced: per character
    from rouge_score.tokenizers import DefaultTokenizer

    english = "The runners were running quickly past 3.5 miles of the U.S.-based co-op's fields!"
    assert UnicodeTokenizer(True).tokenize(english) == DefaultTokenizer(True).tokenize(english)  # as before on ASCII
    ascii_only = lambda p, r: {"rouge1": float(p[0].isascii())}  # noqa: E731 - a metric that cannot read non-ASCII
    assert imperfect(targets, ascii_only, {"rouge1": 1.0}) == ("rouge1", targets[0])
    assert imperfect(["", "ok"], ascii_only, {"rouge1": 1.0}) is None


def test_validate_refuses_a_metric_that_cannot_read_the_targets(tmp_path: Path, monkeypatch, capsys) -> None:
    """The invariant runs on the study's real validation targets before trial 0: a ROUGE that reads ASCII only (as
    rouge_score's default tokenizer did) is refused on Greek targets, naming the metric and the target."""
    from adalora_search.tasks import seq2seq

    def ascii_rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"rouge1": float(all(r.isascii() for r in references)), "rougeL": 1.0}

    rows = [
        {"lead": f"a short notice number {i} about the weather", "headline": f"Καιρός {i} σήμερα"} for i in range(40)
    ]
    (tmp_path / "greek.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    study = seq2seq_study(
        data={"source": {"type": "files", "format": "jsonl", "paths": {"train": "greek.jsonl"}}},
        study={"objective": {"metric": "rougeL", "direction": "maximize"}},
    )
    path = write_study(tmp_path, study)
    assert run_cli(["validate", str(path)], monkeypatch, capsys)[0] == 0  # words of any script: read
    monkeypatch.setattr(seq2seq, "rouge", ascii_rouge)
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 2 and "study.objective / rouge1 = 'Καιρός" in out and "cannot read it" in out
    loss = write_study(tmp_path, {**study, "study": {**study["study"], "objective": {"metric": "eval_loss"}}}, "l.yaml")
    assert run_cli(["validate", str(loss)], monkeypatch, capsys)[0] == 0  # the search does not rank by ROUGE

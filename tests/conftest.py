"""Shared fixtures: a tiny BERT built from a config, a slice of the shipped BBC data, temp storage."""

from __future__ import annotations

import copy
import os
import sys

# no network here or in CI: the Hub is never tried (set before transformers/datasets are imported)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {
    "name_or_path": "minilm-l6",
    "init": "random",
    "config_overrides": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
}
BASE_STUDY: dict[str, Any] = {
    "study": {"name": "t", "n_trials": 2, "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"}},
    "model": TINY_MODEL,
    "data": {
        "source": "bbc-news",
        "text_fields": ["headline"],
        "split": {"validation": 0.2, "test": 0.1, "seed": 0},
        "max_train_samples": 96,
        "max_eval_samples": 48,
        "max_length": 24,
    },
    "training": {
        "max_steps": 12,
        "batch_size": 8,
        "eval_every": 4,
        "learning_rate": 5.0e-3,
        "seed": 0,
        "num_threads": 1,
    },
    "adalora": {
        "target_modules": ["query", "value"],
        "init_r": 4,
        "target_r": 2,
        "lora_alpha": 8.0,
        "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 2},
    },
}


def study_dict(**sections: Any) -> dict[str, Any]:
    """BASE_STUDY with sections merged one level deep, e.g. study_dict(training={"max_steps": 6})."""
    out = copy.deepcopy(BASE_STUDY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def tagging_study() -> dict[str, Any]:
    """A token-classification study of ``ner.jsonl`` beside it: words in ``tokens``, tags in ``ner``."""
    return study_dict(
        model={"task": "token_classification"},
        study={"objective": {"metric": "f1"}},
        data={
            "source": {"type": "files", "format": "jsonl", "paths": {"train": "ner.jsonl"}},
            "text_fields": ["tokens"],
            "label_field": "ner",
        },
    )


def write_study(directory: Path, data: dict[str, Any] | str, name: str = "study.yaml") -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One tokenized-data cache for the whole session (the cache is what makes trials cheap)."""
    os.environ["ADALORA_SEARCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("ADALORA_SEARCH_THREADS", "1")


@pytest.fixture()
def spec_dict() -> dict[str, Any]:
    return study_dict()


def postgres_url() -> str | None:
    """A fresh database URL on the local PostgreSQL, or None (skip) outside CI when it is absent."""
    import sqlalchemy

    url = os.environ.get("ADALORA_SEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        sqlalchemy.create_engine(url).connect().close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL must be reachable in CI at {url}: {exc}") from exc
        return None
    return url


@pytest.fixture()
def pg_url(request: pytest.FixtureRequest) -> str:
    """PostgreSQL URL with a unique study name prefix per test; the test's studies are deleted after."""
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 (never skipped in CI)")
    yield url


CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def tiny_decoder(directory: Path, arch: str = "llama", chat_template: bool = True) -> Path:
    """A tiny random decoder (Llama or GPT-2) with MiniLM's tokenizer, [SEP] as EOS, a chat template."""
    from transformers import AutoTokenizer, GPT2Config, LlamaConfig

    from adalora_search.train.assets import resolve_model

    path = directory / f"tiny-{arch}"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    tokenizer.eos_token = "[SEP]"
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    common = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "bos_token_id": tokenizer.cls_token_id,
    }
    if arch == "llama":
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            **common,
        )
    else:
        config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_inner=64, n_positions=128, **common)
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def causal_study(model_dir: Path, **sections: Any) -> dict[str, Any]:
    """BASE_STUDY as a causal-LM study: the topic of a BBC headline, answered in one word."""
    data = study_dict(
        model={"name_or_path": str(model_dir), "init": "random", "task": "causal_lm", "config_overrides": {}},
        study={"objective": {"metric": "eval_loss", "direction": "minimize"}},
        data={
            "text_fields": None,
            "prompt_template": "Headline: {headline}\nTopic:",
            "response_field": "label",
            "max_length": 48,
        },
        training={"eval_batch_size": 16, "generation": {"max_new_tokens": 3, "max_samples": 8}},
        adalora={"target_modules": ["q_proj", "v_proj"]},
    )
    data["data"].pop("text_fields")
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def cli_exit_code(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``adalora-search ARGS`` in this process; its exit code (0 when the command returned)."""
    from adalora_search import cli

    monkeypatch.setattr(sys, "argv", ["adalora-search", *args])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and everything printed (stdout + stderr) by ``adalora-search ARGS``."""
    code = cli_exit_code(args, monkeypatch)
    captured = capsys.readouterr()
    return code, captured.out + captured.err

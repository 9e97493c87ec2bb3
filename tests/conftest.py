"""Shared fixtures: a tiny BERT built from a config, a slice of the shipped BBC data, temp storage."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {
    "name_or_path": "minilm-l6",
    "init": "random",
    "config_overrides": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                         "intermediate_size": 64},
}
BASE_STUDY: dict[str, Any] = {
    "study": {"name": "t", "n_trials": 2, "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"}},
    "model": TINY_MODEL,
    "data": {"source": "bbc-news", "text_fields": ["headline"], "split": {"validation": 0.2, "test": 0.1, "seed": 0},
             "max_train_samples": 96, "max_eval_samples": 48, "max_length": 24},
    "training": {"max_steps": 12, "batch_size": 8, "eval_every": 4, "learning_rate": 5.0e-3, "seed": 0,
                 "num_threads": 1},
    "adalora": {"target_modules": ["query", "value"], "init_r": 4, "target_r": 2, "lora_alpha": 8.0,
                "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 2}},
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

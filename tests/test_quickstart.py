"""The real shipped MiniLM on a slice of the real BBC News data, through the whole path:
validate -> run 2 trials -> report -> export (the quickstart, scaled down to a couple of minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, cli_exit_code


@pytest.mark.slow
def test_quickstart_path_on_real_minilm_and_bbc_slice(tmp_path: Path, monkeypatch, capsys) -> None:
    study = yaml.safe_load((REPO / "studies" / "bbc_news_minilm.yaml").read_text())
    study["study"].update(n_trials=2, references=[{"kind": "lora"}], keep_top_k_adapters=1)
    study["data"].update(max_train_samples=192, max_eval_samples=64)
    study["training"].update(epochs=None, max_steps=24, eval_every=8, batch_size=16)
    study["baselines"] = study["baselines"][:1]
    study["baselines"][0]["params"]["training.learning_rate"] = 2.0e-2  # learns within 24 steps
    study["adalora"]["schedule"] = {"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 2}
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(study))
    assert cli_exit_code(["validate", str(path)], monkeypatch) == 0
    assert cli_exit_code(["run", str(path)], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "baseline peft-defaults" in out and "reference lora" in out
    assert cli_exit_code(["report", str(path), "--out", str(tmp_path / "report")], monkeypatch) == 0
    assert (tmp_path / "report" / "heatmap_best.png").stat().st_size > 1000
    assert cli_exit_code(["export", str(path), "--out", str(tmp_path / "export")], monkeypatch) == 0
    exported = json.loads((tmp_path / "export" / "rank_config.json").read_text())
    assert exported["model"] == "minilm-l6"
    assert (tmp_path / "export" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "export" / "lora" / "adapter_config.json").exists()
    # the pretrained model learns: better than the majority class on validation
    assert exported["metrics"]["final"]["accuracy"] > 0.3

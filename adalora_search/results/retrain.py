"""``adalora-search retrain EXPORT_DIR``: train the exported fixed-rank LoRA, compare with AdaLoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adalora_search.errors import UserError
from adalora_search.results.export import lora_patterns
from adalora_search.study.space import LoraKnobs, TrialConfig
from adalora_search.train.data import load_tokenized
from adalora_search.train.engine import TrialRun
from adalora_search.train.modeling import load_tokenizer
from adalora_search.train.tasks import get_task


def retrain(export_dir: Path, learning_rates: list[float] | None = None) -> list[str]:
    """Train the exported fixed-rank LoRA of ``export_dir``; lines comparing it with the AdaLoRA trial.

    ``learning_rates``: each is trained and the best on validation (the task's main metric) is kept;
    default: the AdaLoRA trial's own rate, which plain LoRA does not always tolerate.

    Raises:
        UserError: ``export_dir`` holds no export.
    """
    path = export_dir / "rank_config.json"
    if not path.exists():
        raise UserError(f"EXPORT_DIR = {str(export_dir)!r}: no rank_config.json; run `adalora-search export` first")
    data = json.loads(path.read_text())
    cfg = TrialConfig.model_validate(data["config"])
    ranks, alphas = lora_patterns(data["rank_allocation"], cfg.adalora.lora_alpha, cfg.adalora.init_r)
    cfg = cfg.model_copy(update={"method": "lora", "lora": LoraKnobs(rank_pattern=ranks, alpha_pattern=alphas)})
    task = get_task(cfg.model.task)
    tokens = load_tokenized(cfg.data, load_tokenizer(cfg.model), task)
    runs = [_train(cfg, tokens, lr) for lr in (learning_rates or [cfg.training.learning_rate])]
    best = runs[0]
    for candidate in runs[1:]:
        if task.is_better(task.main_metric, candidate[1].get(task.main_metric), best[1].get(task.main_metric)):
            best = candidate
    lr, val, test, params = best
    lines = [f"{'run':40s} {'metric':12s} {'validation':>10s} {'test':>10s} {'trainable':>10s}"]
    adalora = data.get("metrics") or {}
    for label, v, t, n in (
        (f"AdaLoRA trial {data['trial']}", adalora.get("final", {}), adalora.get("test") or {},
         (data.get("trainable_params") or {}).get("final")),
        (f"fixed-rank LoRA (exported), lr {lr:.2g}", val, test, params),
    ):
        lines += [f"{label:40s} {m:12s} {v[m]:10.4f} {t.get(m, float('nan')):10.4f} {n or 0:10d}"
                  for m in task.metrics if m in v]
    if len(runs) > 1:
        lines.append("learning rates tried (validation " + task.main_metric + "): "
                     + ", ".join(f"{r[0]:g} -> {r[1].get(task.main_metric, float('nan')):.4f}" for r in runs))
    return lines


def _train(cfg: TrialConfig, tokens: Any, lr: float) -> tuple[float, dict, dict, int]:
    run = TrialRun(cfg.model_copy(update={"training": cfg.training.model_copy(update={"learning_rate": lr})}), tokens)
    result = run.train()
    test = run.evaluate("test", final=True) if "test" in tokens.splits else {}
    return lr, result.metrics.get("final", {}), test, result.trainable_params.get("final", 0)

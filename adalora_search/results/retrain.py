"""``adalora-search retrain EXPORT_DIR``: train the exported fixed-rank LoRA, compare with AdaLoRA."""

from __future__ import annotations

import json
from pathlib import Path

from adalora_search.errors import UserError
from adalora_search.results.export import lora_patterns
from adalora_search.study.space import LoraKnobs, TrialConfig
from adalora_search.train.data import load_tokenized
from adalora_search.train.engine import TrialRun
from adalora_search.train.modeling import load_tokenizer
from adalora_search.train.tasks import get_task


def retrain(export_dir: Path) -> list[str]:
    """Train the exported fixed-rank LoRA of ``export_dir``; lines comparing it with the AdaLoRA trial."""
    path = export_dir / "rank_config.json"
    if not path.exists():
        raise UserError(f"EXPORT_DIR = {str(export_dir)!r}: no rank_config.json; run `adalora-search export` first")
    data = json.loads(path.read_text())
    cfg = TrialConfig.model_validate(data["config"])
    ranks, alphas = lora_patterns(data["rank_allocation"], cfg.adalora.lora_alpha, cfg.adalora.init_r)
    cfg = cfg.model_copy(update={"method": "lora", "lora": LoraKnobs(rank_pattern=ranks, alpha_pattern=alphas)})
    task = get_task(cfg.model.task)
    tokens = load_tokenized(cfg.data, load_tokenizer(cfg.model), task)
    run = TrialRun(cfg, tokens)
    result = run.train()
    test = run.evaluate("test", final=True) if "test" in tokens.splits else {}
    lines = [f"{'run':28s} {'metric':10s} {'validation':>10s} {'test':>10s} {'trainable':>10s}"]
    adalora = data.get("metrics") or {}
    for label, val, tst, params in (
        (f"AdaLoRA trial {data['trial']}", adalora.get("final", {}), adalora.get("test") or {},
         (data.get("trainable_params") or {}).get("final")),
        ("fixed-rank LoRA (exported)", result.metrics.get("final", {}), test, result.trainable_params.get("final")),
    ):
        for metric in task.metrics:
            if metric in val:
                lines.append(f"{label:28s} {metric:10s} {val[metric]:10.4f} {tst.get(metric, float('nan')):10.4f} "
                             f"{params or 0:10d}")
    return lines

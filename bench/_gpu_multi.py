"""The GPU check's multi-device sections (``bench/gpu_check.py``): one trial on 1 vs N processes, and a
model placed across the visible devices (``model.device_map``).

``parallel``: the same AdaLoRA trial (MiniLM's step-figure study without dropout, 30 steps; a toy BERT with ``--smoke``)
alone and on N ranks (N = the visible GPUs, NCCL; on a machine without one, 2 CPU processes with gloo); wall time,
global tokens/s, and whether the final allocation and validation accuracy match. ``device_map``: the
BERT-base step study with ``model.device_map: auto``; where the layers went and the step time.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from _gpu_parts import CUDA, free, step_models, step_spec

from adalora_search.train import distributed
from adalora_search.train.engine import TrialRun


def _trial(cfg, data, world: int) -> dict[str, Any]:
    free()
    start = time.perf_counter()
    if world == 1:
        run = TrialRun(cfg, data)
        run.train()
    else:
        with distributed.group(cfg, world, CUDA) as ranks:
            run = TrialRun(cfg, data, ranks)
            run.train()
    wall = time.perf_counter() - start
    t = run.result.timing
    return {
        "processes": world,
        "wall_s": round(wall, 2),
        "train_s": t["train_s"],
        # rank 0 counts its own rows' tokens: the trial's are about world x as many
        "tokens_per_s": round(t["train_tokens_per_s"] * world, 1),
        "accuracy": run.result.metrics["final"].get("accuracy"),
        "allocation": run.result.rank_allocation,
    }


def parallel(smoke: bool) -> dict[str, Any]:
    world = torch.cuda.device_count() if CUDA else 2
    if world < 2:
        return {"skipped": f"{world} GPU visible: a trial on several needs 2 or more (NCCL: one rank per GPU)"}
    row = {**step_models(smoke)["minilm-l6"]}
    row["batch"] = row["batch"] * world  # each rank keeps the one-GPU batch
    # no dropout: its masks fall on other rows than in one process, so the runs would differ by more than rounding
    row["model"] = {
        **row["model"],
        "config_overrides": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    }
    steps = 6 if smoke else 30
    cfg, data = step_spec(row, steps)
    cfg = cfg.model_copy(
        update={
            "training": cfg.training.model_copy(update={"eval_every": steps}),
            "adalora": cfg.adalora.model_copy(update={"lora_dropout": 0.0}),
        }
    )
    alone, shared = _trial(cfg, data, 1), _trial(cfg, data, world)
    return {
        "alone": {k: v for k, v in alone.items() if k != "allocation"},
        "shared": {k: v for k, v in shared.items() if k != "allocation"},
        "speedup_wall": round(alone["wall_s"] / shared["wall_s"], 2),
        "same_allocation": alone["allocation"] == shared["allocation"],
        "accuracy_diff_pt": round(100 * abs((alone["accuracy"] or 0) - (shared["accuracy"] or 0)), 2),
    }


def device_map(smoke: bool) -> dict[str, Any]:
    if not CUDA:
        return {"skipped": "no CUDA: model.device_map places a model across GPUs"}
    row = step_models(smoke)["bert-base"]
    row = {**row, "model": {**row["model"], "device_map": "auto"}}
    cfg, data = step_spec(row, 10)
    free()
    start = time.perf_counter()
    run = TrialRun(cfg, data)
    run.train()
    placed = getattr(run.model.base_model.model, "hf_device_map", {})
    return {
        "devices": sorted({str(d) for d in placed.values()}),
        "modules_placed": len(placed),
        "wall_s": round(time.perf_counter() - start, 2),
        "step_ms": round(1000 * run.result.timing["train_s"] / run.result.timing["steps"], 2),
    }

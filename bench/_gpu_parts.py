"""Pieces of bench/gpu_check.py: the study specs it runs, one timed engine run, the NVML sampler.

Every run goes through the project's own machinery (``parse_spec`` -> ``prepare_data`` -> ``sample``
-> ``TrialRun``), so splits, tokenization and batching are the ones a study gets.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import parse_spec
from adalora_search.study.space import LoraKnobs, TrialConfig, sample
from adalora_search.train.data import TokenizedData
from adalora_search.train.engine import TrialRun
from adalora_search.train.modeling import adapted_modules

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
BERT_MODULES = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORST_CASE = {"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 1}  # ranks every budgeting step
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TOY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
# SmolLM2's Llama config widened to ~0.49 B parameters (24 x 18.4 M + 50 M tied embeddings), its tokenizer
DECODER_05B = {
    "hidden_size": 1024,
    "intermediate_size": 5120,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 64,
}
TOY_DECODER = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
# the quickstart's best trial (README: query+value, init_r 12 -> target_r 4, lr 1.8e-2, gamma 0.028)
BEST = {
    "target_modules": ["query", "value"],
    "init_r": 12,
    "target_r": 4,
    "lora_alpha": 32.0,
    "orth_reg_weight": 0.028,
    "schedule": {"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 5},
}


def quickstart_study(smoke: bool) -> dict[str, Any]:
    """studies/bbc_news_minilm.yaml with the best trial's settings fixed, no baselines or references."""
    study = yaml.safe_load((REPO / "studies" / "bbc_news_minilm.yaml").read_text())
    study.pop("baselines")
    study["study"].update(
        references=[], keep_top_k_adapters=0, sampler={"type": "random", "seed": 0}, pruner={"type": "none"}
    )
    study["training"]["learning_rate"] = 1.8e-2
    study["adalora"].update(BEST)
    if smoke:
        study["data"].update(max_train_samples=128, max_eval_samples=64)
        study["training"].update(epochs=None, max_steps=8, eval_every=4, batch_size=16)
    return study


def with_device(cfg: TrialConfig, device: str) -> TrialConfig:
    """The same trial config on another device."""
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"device": device})})


def step_models(smoke: bool) -> dict[str, dict[str, Any]]:
    """name -> model section, data section, batch size and target modules of each step-figure run.

    Decoders are built from SmolLM2's config (``init: random``: timing needs no pretrained weights,
    and its 98 MB GGUF file does not fit what a device call carries), with bf16 weights on CUDA.
    """
    articles = {
        "source": "bbc-news",
        "text_fields": ["text"],
        "split": {"validation": 0.05},
        "max_eval_samples": 16,
        "max_length": 64 if smoke else 128,
    }
    topic = yaml.safe_load((REPO / "studies" / "smollm2_bbc_topic.yaml").read_text())["data"]
    topic.update(max_eval_samples=16, max_train_samples=400)
    decoder = {
        "name_or_path": "smollm2-135m-instruct",
        "task": "causal_lm",
        "init": "random",
        "dtype": "bfloat16" if CUDA else "float32",
    }  # bf16 matrix products are slow on most CPUs
    batch = 4 if smoke else None
    return {
        "minilm-l6": {
            "model": {"name_or_path": "minilm-l6"},
            "data": articles,
            "batch": batch or 32,
            "modules": BERT_MODULES,
        },
        "bert-base": {
            "model": {
                "name_or_path": "minilm-l6",
                "init": "random",
                "config_overrides": TOY_BERT if smoke else BERT_BASE,
            },
            "data": articles,
            "batch": batch or 32,
            "modules": BERT_MODULES,
        },
        "smollm2-135m": {
            "model": {**decoder, "config_overrides": {"num_hidden_layers": 2} if smoke else {}},
            "data": topic,
            "batch": batch or 16,
            "modules": LLAMA_MODULES,
        },
        "decoder-0.5b": {
            "model": {**decoder, "config_overrides": TOY_DECODER if smoke else DECODER_05B},
            "data": {**articles, "max_length": 64 if smoke else 512},
            "batch": batch or 16,
            "modules": LLAMA_MODULES,
        },
    }


def step_spec(row: dict[str, Any], steps: int) -> tuple[TrialConfig, TokenizedData]:
    """The AdaLoRA trial config (init_r 12 -> target_r 4, delta_t 1) and data of a step-figure run."""
    training = {
        "max_steps": steps,
        "batch_size": row["batch"],
        "eval_every": 10**6,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "gradient_checkpointing": False,
    }
    study = {"name": "gpu_check"}
    if row["model"].get("task") == "causal_lm":
        training["generation"] = {"at_evals": True, "max_new_tokens": 1}  # no generation after training
        study["objective"] = {"metric": "eval_loss"}
    spec = parse_spec(
        yaml.safe_dump(
            {
                "study": study,
                "model": row["model"],
                "data": row["data"],
                "training": training,
                "adalora": {
                    "target_modules": row["modules"],
                    "init_r": 12,
                    "target_r": 4,
                    "lora_alpha": 16.0,
                    "schedule": WORST_CASE,
                },
            }
        )
    )
    return sample(spec, optuna.trial.FixedTrial({})), prepare_data(spec)


def lora_twin(cfg: TrialConfig, run: TrialRun) -> TrialConfig:
    """Fixed-rank LoRA at r = init_r on the modules the AdaLoRA run adapted (as adalora_overhead.py)."""
    names = list(adapted_modules(run.model))
    return cfg.model_copy(
        update={
            "method": "lora",
            "lora": LoraKnobs(
                rank_pattern={n: cfg.adalora.init_r for n in names},
                alpha_pattern={n: cfg.adalora.lora_alpha for n in names},
            ),
        }
    )


class Utilisation:
    """Samples torch.cuda.utilization() (NVML) every 100 ms between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(torch.cuda.utilization())
            except Exception:  # noqa: BLE001 - NVML missing: no figure, not a failure
                return

    def start(self) -> None:
        if CUDA:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def steps_only(run: TrialRun, on_step: Any = None) -> None:
    """Evaluation replaced by a constant (timing only); ``on_step(step)`` after each optimizer step."""
    run.evaluate = lambda split, final=False: {run.task.main_metric: 0.0, "eval_loss": 0.0}  # type: ignore
    if on_step is not None:
        real = run._allocate  # called once per optimizer step, after optimizer.step()

        def hooked(step: int) -> None:
            real(step)
            on_step(step)

        run._allocate = hooked  # type: ignore[method-assign]


def timed_run(cfg: TrialConfig, data: TokenizedData, warm: int) -> tuple[TrialRun, dict[str, Any]]:
    """One engine run; step time, tokens/s and GPU utilisation over steps warm..end (after a sync).

    Peak memory is the whole run's (CUDA: allocated; CPU: peak resident set of the process).
    """
    free()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    run, util, marks = TrialRun(cfg, data), Utilisation(), {}
    total = run.total_steps

    def mark(step: int) -> None:
        if step in (warm, total):
            if CUDA:
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()
            if step == warm:
                util.start()
            else:
                util.stop()

    steps_only(run, mark)
    t = run.train().timing
    util.stop()
    step_s = (marks[total] - marks[warm]) / (total - warm)
    tokens_per_step = t["train_tokens_per_s"] * t["train_s"] / t["steps"]
    return run, {
        "step_ms": round(1000 * step_s, 2),
        "tokens_per_s": round(tokens_per_step / step_s, 1),
        "gpu_util_pct": util.mean(),
        "peak_memory_mb": t["peak_memory_mb"],
        "measured_steps": total - warm,
        "params_m": round(run.result.trainable_params["model_total"] / 1e6, 1),
    }


def free() -> None:
    """Release what earlier runs left (models are dropped by the caller)."""
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


def profile_top(run: TrialRun, wait: int, active: int, rows: int = 10) -> dict[str, Any]:
    """torch.profiler over ``active`` optimizer steps after ``wait`` (+ 2 warm-up); top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    with profile(activities=activities, schedule=schedule(wait=wait, warmup=2, active=active, repeat=1)) as prof:
        steps_only(run, lambda step: prof.step())
        run.train()
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)

    def ms(us: float) -> float:
        return round(us / 1000 / active, 3)

    top = [
        {
            "name": e.key,
            "calls_per_step": round(e.count / active, 1),
            "self_cpu_ms_per_step": ms(e.self_cpu_time_total),
            "cpu_total_ms_per_step": ms(e.cpu_time_total),
            "self_device_ms_per_step": ms(getattr(e, "self_device_time_total", 0.0)),
        }
        for e in events[:rows]
    ]
    return {
        "active_steps": active,
        "self_cpu_ms_per_step_all_ops": ms(sum(e.self_cpu_time_total for e in events)),
        "top": top,
    }

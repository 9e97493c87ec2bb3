"""Figure 2: what AdaLoRA's rank allocation costs per step, and how it scales with adapted modules.

For each model: step time of the engine with AdaLoRA (PEFT's RankAllocator, and the batched one
adalora-search installs), with plain LoRA at r = init_r, and forward+backward alone; plus the
time spent inside ``update_and_allocate``.

    python bench/adalora_overhead.py --steps 40 --out bench/results/adalora_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import optuna
import torch
import yaml

from adalora_search.study.loader import parse_spec
from adalora_search.study.space import LoraKnobs, sample
from adalora_search.tasks import get_task
from adalora_search.train import allocator
from adalora_search.train.data import batches, load_tokenized
from adalora_search.train.engine import TrialRun
from adalora_search.train.modeling import load_tokenizer

# compute negligible (2 layers, hidden 32): what is left is the Python and dispatch cost per
# step, the cost that bounds a GPU step when kernels are fast
TINY = {
    "tiny bert from config, hidden 32 (host overhead, 12 matrices)": {
        "name_or_path": "minilm-l6",
        "init": "random",
        "config_overrides": {
            "num_hidden_layers": 2,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
    }
}
MODELS = {
    "minilm-l6 (36 matrices)": {"name_or_path": "minilm-l6"},
    **TINY,
    "24-layer bert-small from config (144 matrices)": {
        "name_or_path": "minilm-l6",
        "init": "random",
        "config_overrides": {
            "num_hidden_layers": 24,
            "hidden_size": 256,
            "num_attention_heads": 4,
            "intermediate_size": 1024,
        },
    },
}
MODULES = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def spec_for(model: dict, steps: int):
    return parse_spec(
        yaml.safe_dump(
            {
                "study": {"name": "bench"},
                "model": model,
                "data": {
                    "source": "bbc-news",
                    "text_fields": ["headline"],
                    "split": {"validation": 0.1},
                    "max_length": 32,
                },
                "training": {"max_steps": steps, "batch_size": 32, "eval_every": 10_000, "learning_rate": 5e-3},
                "adalora": {
                    "target_modules": MODULES,
                    "init_r": 12,
                    "target_r": 4,
                    "schedule": {"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 1},
                },
            }
        )
    )


def engine_step(cfg, data, batched: bool = True) -> tuple[float, float]:
    """Seconds per optimizer step, and seconds per step inside update_and_allocate."""
    if not batched:
        real_install = allocator.install
        allocator.install = lambda model: None
    try:
        run = TrialRun(cfg, data)
    finally:
        if not batched:
            allocator.install = real_install
    spent = [0.0]
    if cfg.method == "adalora":
        real = run.model.base_model.update_and_allocate

        def timed(step: int) -> None:
            start = time.perf_counter()
            real(step)
            spent[0] += time.perf_counter() - start

        run.model.base_model.update_and_allocate = timed
    result = run.train()
    steps = result.timing["steps"]
    return result.timing["train_s"] / steps, spent[0] / steps


def forward_backward(cfg, data, steps: int) -> float:
    """The same AdaLoRA model, forward + backward only: no optimizer step, no allocation."""
    run = TrialRun(cfg, data)
    run.model.train()
    it = batches(data.splits["train"], 32, data.pad_token_id, 0)
    start = time.perf_counter()
    for _ in range(steps):
        (run.forward_model(**next(it)).loss + run.regularizer.loss()).backward()
        run.model.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/adalora_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for label, model in MODELS.items():
        spec = spec_for(model, args.steps)
        data = load_tokenized(spec.data, load_tokenizer(spec.model), get_task(spec.model.task))
        cfg = sample(spec, optuna.trial.FixedTrial({}))
        names = [n for n in _module_names(cfg, data)]
        lora = cfg.model_copy(
            update={
                "method": "lora",
                "lora": LoraKnobs(
                    rank_pattern={n: 12 for n in names}, alpha_pattern={n: cfg.adalora.lora_alpha for n in names}
                ),
            }
        )
        samples: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved rounds; medians below
            for key, value in (
                ("adalora_peft_allocator", engine_step(cfg, data, batched=False)),
                ("adalora_batched_allocator", engine_step(cfg, data, batched=True)),
                ("lora_r12", engine_step(lora, data)),
                ("forward_backward", (forward_backward(cfg, data, args.steps), 0.0)),
            ):
                samples.setdefault(f"{key}_s", []).append(value[0])
                samples.setdefault(f"{key}_allocate_s", []).append(value[1])
        row = {
            "model": label,
            **{k: statistics.median(v) for k, v in samples.items()},
            "min_max": {k: [min(v), max(v)] for k, v in samples.items()},
        }
        row["ratio_adalora_vs_lora"] = row["adalora_batched_allocator_s"] / row["lora_r12_s"]
        row["ratio_adalora_peft_vs_lora"] = row["adalora_peft_allocator_s"] / row["lora_r12_s"]
        row["ratio_adalora_vs_forward_backward"] = row["adalora_batched_allocator_s"] / row["forward_backward_s"]
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "command": f"python bench/adalora_overhead.py --steps {args.steps} --repeats {args.repeats}",
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            f,
            indent=2,
        )


def _module_names(cfg, data) -> list[str]:
    from adalora_search.train.modeling import adapted_modules

    run = TrialRun(cfg, data)
    return list(adapted_modules(run.model))


if __name__ == "__main__":
    main()

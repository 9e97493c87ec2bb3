"""SmolLM2-135M-Instruct on 2 CPU cores: an AdaLoRA step against a LoRA step at r = init_r.

Each measurement runs in its own process (so peak memory is that run's), AdaLoRA and LoRA
interleaved in rounds; reported are medians, tokens/s and peak resident memory. The data and
settings are those of ``studies/smollm2_bbc_topic.yaml`` (chat-templated headline -> topic).

    python bench/llm_step.py --steps 8 --repeats 2 --out bench/results/llm_step.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml

STUDY = Path(__file__).resolve().parents[1] / "studies" / "smollm2_bbc_topic.yaml"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def one(method: str, steps: int) -> dict:
    """One run of ``steps`` optimizer steps in this process; seconds per step, tokens/s, peak RSS."""
    import torch

    from adalora_search.search.runner import prepare_data
    from adalora_search.study.loader import parse_spec
    from adalora_search.study.space import LoraKnobs, sample
    from adalora_search.train.engine import TrialRun
    from adalora_search.train.modeling import adapted_modules

    study = yaml.safe_load(STUDY.read_text())
    study["study"].update(sampler={"type": "random", "seed": 0}, pruner={"type": "none"}, references=[])
    study["training"].update(max_steps=steps, eval_every=10_000, learning_rate=5e-3)
    study["adalora"] = {
        "target_modules": MODULES,
        "init_r": 12,
        "target_r": 4,
        "lora_alpha": 16.0,
        "schedule": {"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 1},
    }
    study.pop("baselines")
    spec = parse_spec(yaml.safe_dump(study))
    torch.set_num_threads(2)
    data = prepare_data(spec)
    cfg = sample(spec, optuna.trial.FixedTrial({}))
    if method == "lora":
        names = list(adapted_modules(TrialRun(cfg, data).model))
        cfg = cfg.model_copy(
            update={
                "method": "lora",
                "lora": LoraKnobs(rank_pattern={n: 12 for n in names}, alpha_pattern={n: 16.0 for n in names}),
            }
        )
    run = TrialRun(cfg, data)
    run.evaluate = lambda split, final=False: {"eval_loss": 0.0}  # type: ignore[method-assign] - steps only
    timing = run.train().timing
    return {
        "method": method,
        "step_s": timing["train_s"] / timing["steps"],
        "tokens_per_s": timing["train_tokens_per_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="bench/results/llm_step.json")
    parser.add_argument("--one", choices=["adalora", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.steps)))
        return
    runs: dict[str, list[dict]] = {"adalora": [], "lora": []}
    for _ in range(args.repeats):
        for method in runs:
            out = subprocess.run(
                [sys.executable, __file__, "--one", method, "--steps", str(args.steps)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[method].append(json.loads(out.strip().splitlines()[-1]))
            print(runs[method][-1], flush=True)
    summary = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("step_s", "tokens_per_s", "peak_rss_mb")}
        for m, rs in runs.items()
    }
    summary["ratio_adalora_vs_lora_step"] = summary["adalora"]["step_s"] / summary["lora"]["step_s"]
    with open(args.out, "w") as f:
        json.dump(
            {
                "command": f"python bench/llm_step.py --steps {args.steps} --repeats {args.repeats}",
                "date": time.strftime("%Y-%m-%d"),
                "machine": "2 CPU cores, 24 GiB, no GPU",
                "summary": summary,
                "runs": runs,
            },
            f,
            indent=2,
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

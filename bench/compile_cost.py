"""Figure 2b: compiled trials (``training.compile``) against eager ones, AdaLoRA and LoRA, per model.

For each model, in interleaved rounds: an AdaLoRA trial and a LoRA trial at r = init_r, each eager and
compiled (``torch.compile``, mode default), every batch padded to the same shape
(``data.pad_to_multiple_of`` = ``max_length``, for eager runs too), evaluation skipped. Reported per
arm: the median optimizer-step time after the first two steps (compilation happens in them), the
host time per step left when the kernels are negligible (the tiny model), the compile seconds (round 1:
empty inductor cache, later rounds: its on-disk cache, as trials 2..N of a study see it), and the step at
which a compiled trial's wall time breaks even with the eager one.

    python bench/compile_cost.py --steps 20 --repeats 2 --out bench/results/compile_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import optuna
import torch
import yaml

from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import parse_spec
from adalora_search.study.space import LoraKnobs, sample
from adalora_search.train.engine import TrialRun
from adalora_search.train.modeling import adapted_modules

BERT_MODULES = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
LLM_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLM_STUDY = Path(__file__).resolve().parents[1] / "studies" / "smollm2_bbc_topic.yaml"
TINY = {
    "name_or_path": "minilm-l6",
    "init": "random",
    "config_overrides": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
}
MODELS = {
    "tiny bert, hidden 32 (host overhead, 12 matrices)": (TINY, ["query", "value"]),
    "minilm-l6 (36 matrices)": ({"name_or_path": "minilm-l6"}, BERT_MODULES),
    "24-layer bert-small from config (144 matrices)": (
        {
            "name_or_path": "minilm-l6",
            "init": "random",
            "config_overrides": {
                "num_hidden_layers": 24,
                "hidden_size": 256,
                "num_attention_heads": 4,
                "intermediate_size": 1024,
            },
        },
        BERT_MODULES,
    ),
    "smollm2-135m (210 matrices)": (None, LLM_MODULES),
}


def study_for(model: dict | None, modules: list[str], steps: int) -> dict:
    adalora = {
        "target_modules": modules,
        "init_r": 12,
        "target_r": 4,
        "lora_alpha": 16.0,
        "schedule": {"unit": "fraction", "t_init": 0.1, "t_final": 0.2, "delta_t": 1},
    }
    if model is None:  # the shipped SmolLM2 study's data and settings (chat-templated headline -> topic)
        study = yaml.safe_load(LLM_STUDY.read_text())
        study["study"] = {"name": "bench", "objective": study["study"]["objective"]}
        study.pop("baselines", None)
        study["training"].update(max_steps=steps, eval_every=10_000, learning_rate=5e-3)
    else:
        study = {
            "study": {"name": "bench"},
            "model": model,
            "data": {"source": "bbc-news", "text_fields": ["headline"], "split": {"validation": 0.1}, "max_length": 32},
            "training": {"max_steps": steps, "batch_size": 32, "eval_every": 10_000, "learning_rate": 5e-3},
        }
    study["data"]["pad_to_multiple_of"] = study["data"]["max_length"]  # one batch shape: one graph
    study["adalora"] = adalora
    return study


def one(cfg, data) -> dict:
    """One trial's optimizer-step times (seconds), compile record, tokens per second."""
    run = TrialRun(cfg, data)
    run.evaluate = lambda split, final=False: {"eval_loss": 0.0}  # type: ignore[method-assign] - steps only
    stamps = [time.perf_counter()]
    real = run._allocate

    def stamped(step: int) -> None:
        real(step)
        stamps.append(time.perf_counter())

    run._allocate = stamped  # type: ignore[method-assign] - once per optimizer step
    timing = run.train().timing
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    return {
        "step_s": statistics.median(durations[2:]),
        "first_steps_s": durations[:2],
        "compile": timing.get("compile"),
        "tokens_per_s": timing["train_tokens_per_s"],
    }


def arms(study: dict) -> dict:
    spec = parse_spec(yaml.safe_dump(study))
    data = prepare_data(spec)
    adalora = sample(spec, optuna.trial.FixedTrial({}))
    names = list(adapted_modules(TrialRun(adalora, data).model))
    lora = adalora.model_copy(
        update={
            "method": "lora",
            "lora": LoraKnobs(rank_pattern={n: 12 for n in names}, alpha_pattern={n: 16.0 for n in names}),
        }
    )

    def compiled(cfg):
        return cfg.model_copy(update={"training": cfg.training.model_copy(update={"compile": True})})

    return {
        "adalora_eager": (adalora, data),
        "adalora_compiled": (compiled(adalora), data),
        "lora_eager": (lora, data),
        "lora_compiled": (compiled(lora), data),
    }


def summary(label: str, samples: dict[str, list[dict]]) -> dict:
    step = {k: statistics.median(s["step_s"] for s in v) for k, v in samples.items()}
    compile_s = {k: [s["compile"]["compile_s"] for s in v] for k, v in samples.items() if "compiled" in k}
    row = {
        "model": label,
        "step_s": step,
        "compile_s_per_round": compile_s,
        "ratio_adalora_compiled_vs_lora_compiled": step["adalora_compiled"] / step["lora_compiled"],
        "ratio_adalora_compiled_vs_lora_eager": step["adalora_compiled"] / step["lora_eager"],
        "ratio_adalora_eager_vs_lora_eager": step["adalora_eager"] / step["lora_eager"],
        "speedup_adalora": step["adalora_eager"] / step["adalora_compiled"],
        "speedup_lora": step["lora_eager"] / step["lora_compiled"],
    }
    saved = step["adalora_eager"] - step["adalora_compiled"]
    cold, warm = compile_s["adalora_compiled"][0], min(compile_s["adalora_compiled"])
    row["adalora_break_even_steps"] = {
        "cold_cache": cold / saved if saved > 0 else None,
        "warm_cache": warm / saved if saved > 0 else None,
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", default="bench/results/compile_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for label in args.models:
        model, modules = MODELS[label]
        runs = arms(study_for(model, modules, args.steps))
        samples: dict[str, list[dict]] = {}
        for _ in range(args.repeats):  # interleaved rounds
            for name, (cfg, data) in runs.items():
                samples.setdefault(name, []).append(one(cfg, data))
                print(label, name, json.dumps(samples[name][-1]), flush=True)
        rows.append({**summary(label, samples), "runs": samples})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "runs"}), flush=True)
        _write(args, rows)


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "command": f"python bench/compile_cost.py --steps {args.steps} --repeats {args.repeats}",
                "date": time.strftime("%Y-%m-%d"),
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=2,
        )
    )
    tmp.replace(out)


if __name__ == "__main__":
    main()

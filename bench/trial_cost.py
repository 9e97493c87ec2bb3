"""Figure 1: one trial end to end, adalora-search engine vs HF Trainer + PEFT AdaLoRA.

Same model (shipped MiniLM), same data (BBC headlines, same split), same AdaLoRA settings, same
optimizer steps, same evaluation interval. The Trainer baseline re-tokenizes per trial (as a
typical script does, with dynamic padding via DataCollatorWithPadding, a fair baseline) and
calls ``update_and_allocate`` from ``TrainerCallback.on_optimizer_step`` (Trainer does not).

    python bench/trial_cost.py --repeats 3 --steps 60 --out bench/results/trial_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import optuna
import torch
from peft import get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from adalora_search.study.loader import parse_spec
from adalora_search.study.space import sample
from adalora_search.tasks import get_task
from adalora_search.train.assets import resolve_model
from adalora_search.train.data import load_splits, load_tokenized
from adalora_search.train.engine import TrialRun
from adalora_search.train.modeling import adalora_config, load_tokenizer

STUDY = """
study: {name: bench}
model: minilm-l6
data: {source: bbc-news, text_fields: [headline], split: {validation: 0.1, test: 0.1, seed: 0}, max_length: 32}
training: {max_steps: STEPS, batch_size: 32, eval_every: 20, learning_rate: 1.0e-2, warmup_ratio: 0.1}
adalora: {target_modules: [query, key, value, attention.output.dense, intermediate.dense, output.dense],
          init_r: 12, target_r: 4, lora_alpha: 32, schedule: {t_init: 0.1, t_final: 0.2, delta_t: 5}}
"""


def ours(spec) -> dict:
    start = time.perf_counter()
    cfg = sample(spec, optuna.trial.FixedTrial({}))
    # warm cache: as trial 2..N of a study
    data = load_tokenized(spec.data, load_tokenizer(spec.model), get_task(spec.model.task))
    run = TrialRun(cfg, data, data_seconds=time.perf_counter() - start)
    result = run.train()
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "steps_per_s": result.timing["steps"] / result.timing["train_s"],
        "accuracy": result.metrics["final"]["accuracy"],
    }


class Allocate(TrainerCallback):
    """What Trainer lacks: AdaLoRA's budget update after each optimizer step (before zero_grad)."""

    def __init__(self, model):
        self.model = model

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.model.base_model.update_and_allocate(state.global_step + 1)


def trainer(spec, steps: int) -> dict:
    start = time.perf_counter()
    tokenizer = load_tokenizer(spec.model)
    raw = load_splits(spec.data, get_task(spec.model.task))  # a typical script loads and splits per run...
    names = sorted(set(raw["train"]["label"]))

    def encode(batch):  # ...and tokenizes per run
        out = tokenizer(batch["headline"], truncation=True, max_length=32)
        out["labels"] = [names.index(x) for x in batch["label"]]
        return out

    train = raw["train"].map(encode, batched=True, remove_columns=raw["train"].column_names)
    val = raw["validation"].map(encode, batched=True, remove_columns=raw["validation"].column_names)
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm-l6"), num_labels=len(names))
    cfg = sample(spec, optuna.trial.FixedTrial({}))
    model = get_peft_model(base, adalora_config(cfg.adalora, steps))
    args = TrainingArguments(
        output_dir="/tmp/bench_trainer",
        max_steps=steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        learning_rate=1e-2,
        warmup_steps=0.1,
        eval_strategy="steps",
        eval_steps=20,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        max_grad_norm=1.0,
    )

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    t = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        compute_metrics=accuracy,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Allocate(model)],
    )
    out = t.train()
    metrics = t.evaluate()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "steps_per_s": steps / out.metrics["train_runtime"], "accuracy": metrics["eval_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="bench/results/trial_cost.json")
    args = parser.parse_args()
    spec = parse_spec(STUDY.replace("STEPS", str(args.steps)))
    # build the cache once, outside the timing
    load_tokenized(spec.data, load_tokenizer(spec.model), get_task(spec.model.task))
    runs = {"adalora-search": [], "hf-trainer": []}
    for _ in range(args.repeats):  # interleaved so drift hits both sides
        runs["adalora-search"].append(ours(spec))
        runs["hf-trainer"].append(trainer(spec, args.steps))
        print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
    summary = {}
    for name, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        rates = [r["steps_per_s"] for r in rs]
        summary[name] = {
            "wall_s_median": statistics.median(walls),
            "wall_s_min": min(walls),
            "wall_s_max": max(walls),
            "steps_per_s_median": statistics.median(rates),
            "accuracy": [r["accuracy"] for r in rs],
        }
    summary["speedup_end_to_end"] = summary["hf-trainer"]["wall_s_median"] / summary["adalora-search"]["wall_s_median"]
    summary["speedup_steps_per_s"] = (
        summary["adalora-search"]["steps_per_s_median"] / summary["hf-trainer"]["steps_per_s_median"]
    )
    print(json.dumps(summary, indent=2))
    with open(args.out, "w") as f:
        json.dump(
            {
                "command": f"python bench/trial_cost.py --repeats {args.repeats} --steps {args.steps}",
                "date": time.strftime("%Y-%m-%d"),
                "runs": runs,
                "summary": summary,
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()

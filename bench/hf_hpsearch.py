"""The baseline users write today: Trainer.hyperparameter_search(backend="optuna") for AdaLoRA.

AdaLoRA's knobs are not TrainingArguments, so they are sampled in ``model_init(trial)``; Trainer
does not call ``update_and_allocate``, so a callback does. Same space, model, data and steps as
the quickstart study; stopped at a wall-time budget. Each trial evaluates test when it ends.
"""

from __future__ import annotations

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

from adalora_search.study.distributions import suggest
from adalora_search.study.space import KNOBS, build_config, knob
from adalora_search.train.assets import resolve_model
from adalora_search.train.data import load_splits
from adalora_search.train.modeling import adalora_config, load_tokenizer
from adalora_search.train.tasks import get_task


class Allocate(TrainerCallback):
    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.test: dict[int, float] = {}
        self.steps = 0

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.trainer.model.base_model.update_and_allocate(state.global_step + 1)
        self.steps += 1

    def on_train_end(self, args, state, control, **kwargs):
        out = self.trainer.predict(self.test_set)
        number = self.trainer._trial.number if self.trainer._trial is not None else -1
        self.test[number] = float((np.argmax(out.predictions, -1) == out.label_ids).mean())



def _accuracy(prediction) -> dict[str, float]:  # noqa: ANN001 - transformers' EvalPrediction
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

def run_hf_search(spec, seed: int, wall_budget: float) -> dict:
    start = time.perf_counter()
    tokenizer = load_tokenizer(spec.model)
    raw = load_splits(spec.data, get_task(spec.model.task))
    names = sorted(set(raw["train"]["label"]))

    def encode(batch):
        out = tokenizer(batch["headline"], truncation=True, max_length=spec.data.max_length)
        out["labels"] = [names.index(x) for x in batch["label"]]
        return out
    sets = {k: v.map(encode, batched=True, remove_columns=v.column_names) for k, v in raw.items()}
    steps = int(spec.training.epochs * -(-len(sets["train"]) // spec.training.batch_size))
    callback = Allocate()
    callback.test_set = sets["test"]

    def model_init(trial):
        values = {p: (suggest(trial, p, knob(spec, p)) if trial is not None else _first(knob(spec, p))) for p in KNOBS}
        cfg = build_config(spec, values)
        torch.manual_seed(0)
        base = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm-l6"), num_labels=len(names))
        return get_peft_model(base, adalora_config(cfg.adalora, steps))

    args = TrainingArguments(output_dir="/tmp/bench_hf", num_train_epochs=spec.training.epochs,
                             per_device_train_batch_size=32, per_device_eval_batch_size=128, warmup_steps=0.1,
                             eval_strategy="steps", eval_steps=spec.training.eval_every, save_strategy="no",
                             report_to=[], logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model_init=model_init, args=args, train_dataset=sets["train"], eval_dataset=sets["validation"],
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback],
                      compute_metrics=_accuracy)
    callback.trainer = trainer
    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("training.learning_rate", 3e-3, 3e-2, log=True)}
    remaining = max(wall_budget - (time.perf_counter() - start), 1.0)
    best = trainer.hyperparameter_search(direction="maximize", backend="optuna", hp_space=hp_space, n_trials=1000,
                                         timeout=remaining, sampler=optuna.samplers.TPESampler(seed=seed),
                                         compute_objective=lambda m: m["eval_accuracy"])
    wall = time.perf_counter() - start
    return {"arm": "hf-hpsearch", "seed": seed, "wall_s": wall, "trials": len(callback.test),
            "optimizer_steps": callback.steps, "best_validation": best.objective,
            "test_of_best": callback.test.get(int(best.run_id))}


def _first(dist):
    from adalora_search.study.distributions import corners
    return corners(dist)[0]

"""The baseline users write today: Trainer.hyperparameter_search(backend="optuna") for AdaLoRA.

AdaLoRA's knobs are not TrainingArguments, so they are sampled in ``model_init(trial)``; Trainer
does not call ``update_and_allocate``, so a callback does. Same space, model, data and steps as
the study; Optuna's default pruner (MedianPruner()) as ``hyperparameter_search`` leaves it. Stopped
after ``n_trials`` trials or a wall-time budget. Each trial that runs to its end evaluates validation
at its last step (the value Optuna gets) and then test.
"""

from __future__ import annotations

import time

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from peft import get_peft_model
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from adalora_search.study.distributions import corners, is_searched, suggest
from adalora_search.study.space import KNOBS, build_config, knob, optimizer_steps
from adalora_search.tasks import get_task
from adalora_search.train.data import load_splits
from adalora_search.train.modeling import adalora_config, build_base, load_tokenizer


class Allocate(TrainerCallback):
    """``update_and_allocate`` after each optimizer step; steps and test accuracy per trial number."""

    def __init__(self, test_set) -> None:  # noqa: ANN001 - a datasets.Dataset
        self.trainer: Trainer | None = None
        self.test_set = test_set
        self.steps: dict[int, int] = {}
        self.test: dict[int, float] = {}

    def _number(self) -> int:
        return self.trainer._trial.number if self.trainer._trial is not None else -1

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.trainer.model.base_model.update_and_allocate(state.global_step + 1)
        self.steps[self._number()] = self.steps.get(self._number(), 0) + 1

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:  # the trial's value is validation at its last step, as ours
            control.should_evaluate = True

    def on_train_end(self, args, state, control, **kwargs):
        if state.global_step < state.max_steps:  # Trainer calls this before raising TrialPruned: no test
            return
        out = self.trainer.predict(self.test_set)
        self.test[self._number()] = float((np.argmax(out.predictions, -1) == out.label_ids).mean())


def _accuracy(prediction) -> dict[str, float]:  # noqa: ANN001 - transformers' EvalPrediction
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def _arguments(spec, steps: int) -> TrainingArguments:
    t = spec.training
    return TrainingArguments(
        output_dir="/tmp/bench_hf",
        max_steps=steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay if not is_searched(t.weight_decay) else 0.0,
        lr_scheduler_type={"constant": "constant_with_warmup"}.get(t.scheduler, t.scheduler),
        max_grad_norm=t.max_grad_norm or 0.0,
        eval_strategy="steps",
        eval_steps=t.eval_every,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        seed=t.seed,
    )


def run_hf_search(spec, seed: int, wall_budget: float | None = None, n_trials: int = 1000) -> dict:
    """Run the Trainer search; returns totals and ``trial_log`` (per trial: state, finish time, steps,
    validation and test accuracy), every time in seconds since this call started.
    """
    start, start_epoch = time.perf_counter(), time.time()
    tokenizer = load_tokenizer(spec.model)
    raw = load_splits(spec.data, get_task(spec.model.task))
    names = sorted(set(raw["train"]["label"]))
    field, max_length = spec.data.text_fields[0], spec.data.max_length

    def encode(batch):
        out = tokenizer(batch[field], truncation=True, max_length=max_length)
        out["labels"] = [names.index(x) for x in batch["label"]]
        return out

    sets = {k: v.map(encode, batched=True, remove_columns=v.column_names) for k, v in raw.items()}
    steps = optimizer_steps(spec.training, len(sets["train"]))
    callback = Allocate(sets["test"])

    def model_init(trial):
        values = {p: (suggest(trial, p, knob(spec, p)) if trial is not None else _first(knob(spec, p))) for p in KNOBS}
        cfg = build_config(spec, values)
        base = build_base(spec.model, names, spec.training.seed)
        return get_peft_model(base, adalora_config(cfg.adalora, steps))

    trainer = Trainer(
        model_init=model_init,
        args=_arguments(spec, steps),
        train_dataset=sets["train"],
        eval_dataset=sets["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[callback],
        compute_metrics=_accuracy,
    )
    callback.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # no metrics dict printed per evaluation

    def hp_space(trial):
        args = {"learning_rate": "training.learning_rate", "weight_decay": "training.weight_decay"}
        return {a: suggest(trial, p, knob(spec, p)) for a, p in args.items() if is_searched(knob(spec, p))}

    storage = optuna.storages.InMemoryStorage()
    remaining = max(wall_budget - (time.perf_counter() - start), 1.0) if wall_budget is not None else None
    best = trainer.hyperparameter_search(
        direction="maximize",
        backend="optuna",
        hp_space=hp_space,
        n_trials=n_trials,
        timeout=remaining,
        sampler=optuna.samplers.TPESampler(seed=seed),
        storage=storage,
        study_name="hf",
        compute_objective=lambda m: m["eval_accuracy"],
    )
    wall = time.perf_counter() - start
    log = [
        {
            "number": t.number,
            "state": t.state.name,
            "baseline": None,
            "finished_s": t.datetime_complete.timestamp() - start_epoch,
            "steps": callback.steps.get(t.number, 0),
            "validation": t.value if t.state == TrialState.COMPLETE else None,
            "test": callback.test.get(t.number),
        }
        for t in optuna.load_study(study_name="hf", storage=storage).trials
        if t.datetime_complete
    ]
    return {
        "arm": "hf-hpsearch",
        "seed": seed,
        "wall_s": wall,
        "trials": len(log),
        "pruned": sum(t["state"] == "PRUNED" for t in log),
        "optimizer_steps": sum(callback.steps.values()),
        "best_validation": best.objective,
        "test_of_best": callback.test.get(int(best.run_id)),
        "trial_log": log,
    }


def _first(dist):
    return corners(dist)[0]

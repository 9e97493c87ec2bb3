"""GPU check (only in a session lent a device): the engine on CUDA in bf16, figures to JSON.

Runs the real trial engine (PEFT AdaLoRA, update_and_allocate per optimizer step) on a
MiniLM-L6-shaped and a BERT-base-shaped model built from configs (random weights: timing does
not need pretrained ones), on BBC News articles. Records step time, tokens/s, peak GPU memory,
GPU utilisation and the share of step time spent in ``update_and_allocate``; then checks that a
CUDA out-of-memory trial fails cleanly and the next trial runs normally.

    python bench/gpu_check.py --model-dir DIR --csv bbc.csv --out results.json
(`DIR` holds a BERT config + tokenizer; `bbc.csv` has headline,text,label columns.)
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
import time
from pathlib import Path

import optuna
import torch
import yaml
from transformers import AutoTokenizer

from adalora_search.errors import TrialFailure
from adalora_search.study.loader import parse_spec
from adalora_search.study.space import sample
from adalora_search.train.data import Split, TokenizedData
from adalora_search.train.engine import TrialRun

SHAPES = {
    "minilm-l6": {},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072},
}


def load_data(model_dir: str, csv_path: str, field: str, max_length: int) -> TokenizedData:
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    names = sorted({r["label"] for r in rows})
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok([r[field] for r in rows], truncation=True, max_length=max_length)["input_ids"]
    labels = [names.index(r["label"]) for r in rows]
    cut = int(0.9 * len(rows))
    return TokenizedData({"train": Split({"input_ids": ids[:cut], "labels": labels[:cut]}),
                          "validation": Split({"input_ids": ids[cut:], "labels": labels[cut:]})},
                         names, tok.pad_token_id)


def config(model_dir: str, shape: dict, steps: int, batch: int, max_length: int, csv_path: str):
    study = {
        "study": {"name": "gpu"},
        "model": {"name_or_path": model_dir, "init": "random", "config_overrides": shape},
        "data": {"source": {"type": "files", "format": "csv", "paths": {"train": csv_path}},
                 "text_fields": ["text"], "split": {"validation": 0.1}, "max_length": max_length},
        "training": {"max_steps": steps, "batch_size": batch, "eval_every": steps, "learning_rate": 1e-3,
                     "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "adalora": {"target_modules": ["query", "key", "value", "attention.output.dense", "intermediate.dense",
                                       "output.dense"], "init_r": 12, "target_r": 4,
                    "schedule": {"t_init": 0.1, "t_final": 0.2, "delta_t": 1}},
    }
    return sample(parse_spec(yaml.safe_dump(study)), optuna.trial.FixedTrial({}))


class Utilisation:
    """Samples torch.cuda.utilization() (NVML) every 100 ms while a run is going."""

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

    def __enter__(self) -> Utilisation:
        if torch.cuda.is_available():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def measure(name: str, cfg, data: TokenizedData) -> dict:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run = TrialRun(cfg, data)
    real, spent = run.model.base_model.update_and_allocate, [0.0]

    def timed(step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        real(step)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        spent[0] += time.perf_counter() - start

    run.model.base_model.update_and_allocate = timed
    with Utilisation() as util:
        result = run.train()
    t = result.timing
    return {"model": name, "steps": t["steps"], "batch": cfg.training.batch_size,
            "step_ms": round(1000 * t["train_s"] / t["steps"], 2), "train_tokens_per_s": t["train_tokens_per_s"],
            "peak_memory_mb": t["peak_memory_mb"], "gpu_utilisation_pct": util.mean(),
            "update_and_allocate_share": round(spent[0] / t["train_s"], 4),
            "update_and_allocate_ms_per_step": round(1000 * spent[0] / t["steps"], 2),
            "final_total_rank": sum(result.rank_allocation.values()), "accuracy": result.metrics["final"]["accuracy"]}


def oom_check(model_dir: str, csv_path: str, data: TokenizedData) -> dict:
    """A trial far too large for the card must fail with its reason; the next one must run."""
    huge = config(model_dir, SHAPES["bert-base"], 2, 65536, 512, csv_path)
    big = TokenizedData({"train": Split({"input_ids": [list(range(101, 613))] * 65536, "labels": [0] * 65536}),
                         "validation": data.splits["validation"]}, data.label_names, data.pad_token_id)
    try:
        TrialRun(huge, big).train()
        failure = None
    except TrialFailure as exc:
        failure = str(exc)[:200]
    after = measure("minilm-l6 after OOM", config(model_dir, SHAPES["minilm-l6"], 20, 32, 128, csv_path), data)
    return {"oom_failure": failure, "next_trial_ok": after["steps"] == 20, "next_trial": after}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "runs": []}
    data = load_data(args.model_dir, args.csv, "text", 128)
    for name, shape in SHAPES.items():
        for batch in (32, 128):
            cfg = config(args.model_dir, shape, args.steps, batch, 128, args.csv)
            report["runs"].append(measure(name, cfg, data))
            print(json.dumps(report["runs"][-1]), flush=True)
    if torch.cuda.is_available():
        report["oom"] = oom_check(args.model_dir, args.csv, data)
        print(json.dumps(report["oom"]), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

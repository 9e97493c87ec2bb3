"""BENCHMARKS §2: what AdaLoRA's orthogonal regularizer costs, PEFT's loop vs the batched one.

One batch (32 × 32 tokens), forward + backward, medians of 3 rounds of 8: PEFT's forward (its
regularizer loop inside ``AdaLoraModel.forward``), the transformers forward under it plus
``OrthogonalRegularizer``, and the batched regularizer alone.

    python bench/regularizer_cost.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).parent))
from adalora_overhead import MODELS, spec_for  # noqa: E402

from adalora_search.study.space import sample  # noqa: E402
from adalora_search.tasks import get_task  # noqa: E402
from adalora_search.train.data import batches, load_tokenized  # noqa: E402
from adalora_search.train.engine import TrialRun  # noqa: E402
from adalora_search.train.modeling import load_tokenizer  # noqa: E402

LABELS = ("minilm-l6 (36 matrices)", "24-layer bert-small from config (144 matrices)")


def _ms(fn: Callable[[], None], model: torch.nn.Module) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(8):
        fn()
    model.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / 8 * 1000


def measure(label: str) -> dict[str, float]:
    """Milliseconds per forward + backward of each variant on one model."""
    spec = spec_for(MODELS[label], 12)
    data = load_tokenized(spec.data, load_tokenizer(spec.model), get_task(spec.model.task))
    run = TrialRun(sample(spec, optuna.trial.FixedTrial({})), data)
    run.model.train()
    batch = next(iter(batches(data.splits["train"], 32, data.pad_token_id, 0)))
    variants = {
        "peft_forward_backward": lambda: run.model(**batch).loss.backward(),
        "batched_forward_backward": lambda: (run.forward_model(**batch).loss + run.regularizer.loss()).backward(),
        "regularizer_alone": lambda: run.regularizer.loss().backward(),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(3):  # interleaved rounds
        for key, fn in variants.items():
            times[key].append(_ms(fn, run.model))
    return {k: round(statistics.median(v), 1) for k, v in times.items()}


def main() -> None:
    torch.set_num_threads(2)
    rows = {}
    for label in LABELS:
        rows[label] = measure(label)
        print(label, rows[label], flush=True)
    Path("bench/results/regularizer.json").write_text(
        json.dumps(
            {
                "command": "python bench/regularizer_cost.py",
                "unit": "ms per forward + backward, batch 32 x 32 tokens",
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Task-level figures (issue #22 part 5): one shipped offline study per task, run on this CPU from scratch.

    python bench/task_figures.py [--studies bbc_headlines_bart bbc_cloze_minilm_qa] [--out bench/results/tasks_cpu.json]

Each study runs in a fresh temporary folder (its own SQLite storage and data cache) through the Python API: the
search, then its references (zero-shot, uniform LoRA, PiSSA, DoRA, EVA, each learning rate chosen on
validation). Written per study: the wall time, the best trial's and PEFT's-defaults baseline's validation and test
metrics and trainable share, each reference's, and the EVA / AdaLoRA allocation overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _scores(metrics: dict, trainable: dict) -> dict:
    share = trainable.get("final", 0) / max(trainable.get("model_total", 1), 1)
    return {
        "validation": metrics.get("final", {}),
        "test": metrics.get("test", {}),
        "trainable_share": round(share, 5),
    }


def run_study(name: str) -> dict:
    """Run ``studies/NAME.yaml`` from scratch in a temporary folder; its figures."""
    from adalora_search import api
    from adalora_search.results import tables

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ADALORA_SEARCH_CACHE"] = str(Path(tmp) / "cache")
        path = Path(tmp) / f"{name}.yaml"
        shutil.copy(REPO / "studies" / f"{name}.yaml", path)
        start = time.perf_counter()
        result = api.run(path)
        wall = time.perf_counter() - start
        trials = result.trials
        baselines = {t.baseline: t for t in trials if t.baseline}
        best = result.best
        out = {
            "wall_s": round(wall, 1),
            "trials": len(trials),
            "best_trial": {"number": best.number, **_scores(best.metrics, best.trainable_params)},
            "baselines": {
                name: {"number": t.number, **_scores(t.metrics, t.trainable_params)} for name, t in baselines.items()
            },
            "references": {
                kind: {
                    "learning_rate": ref.learning_rate,
                    "failure": ref.failure,
                    **_scores(ref.metrics, ref.trainable_params),
                }
                for kind, ref in result.references.items()
            },
            "lines": result.lines,
        }
        eva = result.references.get("eva")
        if eva is not None and eva.rank_allocation and eva.of_trial is not None:
            trial = next(t for t in trials if t.number == eva.of_trial)
            grid = tables.allocation_grid(trial.rank_allocation)
            out["eva_overlap"] = round(tables.overlap(grid, tables.allocation_grid(eva.rank_allocation)), 3)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", default=["bbc_headlines_bart", "bbc_cloze_minilm_qa"])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "tasks_cpu.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = {
        "command": " ".join(["python", "bench/task_figures.py", "--studies", *args.studies]),
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "studies": {name: run_study(name) for name in args.studies},
    }
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(figures, indent=2))
    tmp.replace(args.out)
    for name, study in figures["studies"].items():
        print(f"{name}: {study['wall_s']} s")
        print("\n".join(study["lines"]))


if __name__ == "__main__":
    main()

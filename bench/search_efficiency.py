"""Figure 3: search efficiency on the quickstart study.

Arms, each with the same number of trials and the same sampler seed:
  tpe+pruner  the study as shipped (TPE, median trial pruner)
  random      RandomSampler, no trial pruning
  hf-hpsearch Trainer.hyperparameter_search(backend="optuna") with the AdaLoRA knobs sampled in
              model_init (the workaround its maintainers give), run for the wall time tpe+pruner took
Recorded: optimizer steps consumed, wall time, best validation accuracy, and the test accuracy
of the trial with the best validation accuracy (each trial evaluates test at its end).

    python bench/search_efficiency.py --seeds 0 1 2 --out bench/results/search_efficiency.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from adalora_search.search.runner import Budget, work
from adalora_search.study.loader import load_spec
from adalora_search.study.samplers import NoPruner, PrunerSpec, RandomS, SamplerSpec

STUDY = Path(__file__).resolve().parents[1] / "studies" / "bbc_news_minilm.yaml"


def arm(spec, name: str, seed: int, n_trials: int) -> dict:
    study = spec.study
    if name == "random":
        study = study.model_copy(update={"sampler": SamplerSpec(RandomS(seed=seed)), "pruner": PrunerSpec(NoPruner())})
    else:
        sampler = study.sampler.root.model_copy(update={"seed": seed})
        study = study.model_copy(update={"sampler": SamplerSpec(sampler)})
    study = study.model_copy(update={"name": f"{name}-{seed}", "references": [], "keep_top_k_adapters": 0})
    variant = spec.model_copy(update={"study": study})
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/s.db"
        start = time.perf_counter()
        work(variant, url, Budget(n_trials, None), Path(tmp), log=lambda _: None)
        wall = time.perf_counter() - start
        trials = optuna.load_study(study_name=study.name, storage=url).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value)
    return {"arm": name, "seed": seed, "wall_s": wall, "trials": len(trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "optimizer_steps": sum(t.user_attrs.get("timing", {}).get("steps", 0) for t in trials),
            "best_validation": best.value, "test_of_best": best.user_attrs["metrics"]["test"]["accuracy"]}


def hf_arm(spec, seed: int, wall_budget: float) -> dict:
    from hf_hpsearch import run_hf_search

    return run_hf_search(spec, seed, wall_budget)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=16)
    parser.add_argument("--arms", nargs="+", default=["tpe+pruner", "random", "hf-hpsearch"])
    parser.add_argument("--out", default="bench/results/search_efficiency.json")
    args = parser.parse_args()
    spec = load_spec(STUDY)
    rows = []
    for seed in args.seeds:
        tpe = arm(spec, "tpe+pruner", seed, args.n_trials)
        rows.append(tpe)
        print(json.dumps(rows[-1]), flush=True)
        if "random" in args.arms:
            rows.append(arm(spec, "random", seed, args.n_trials))
            print(json.dumps(rows[-1]), flush=True)
        if "hf-hpsearch" in args.arms:
            rows.append(hf_arm(spec, seed, tpe["wall_s"]))
            print(json.dumps(rows[-1]), flush=True)
        Path(args.out).write_text(json.dumps({"command": "python bench/search_efficiency.py --seeds "
                                                         + " ".join(map(str, args.seeds)),
                                              "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""The LoRA family on a table (issue #34, item 1): uniform LoRA, PiSSA, DoRA and EVA at the budgets the table's
``target_r`` values give, each over its own learning-rate grid and the table's training seeds.

A run is the tool's own reference run (``results/references.reference_config``): fixed-rank LoRA of rank
``target_r`` on every adapted matrix of ``--modules`` (the same total rank as an AdaLoRA trial's final budget),
LoRA's alpha set so that its scaling equals the AdaLoRA runs' (``lora_alpha / init_r``, from the best AdaLoRA
configuration of the table on those modules, or ``--alpha`` / ``--init-r``), the table's other settings. Each
run keeps its validation curve, final validation and test metrics, steps, wall time and trainable parameters.
Runs go to ``bench/tables/work/<name>.references.<i>of<n>.jsonl`` as they finish (resumable: a run already
there is skipped); the merged file is ``bench/tables/<name>.references.json.gz``.

    python bench/build_references.py bench/tables/t1_bbc_news_minilm.json.gz --modules query,value \\
        --methods lora pissa dora eva --rates 1e-3 2e-3 4e-3 8e-3 1.6e-2 3.2e-2 --threads 1 --shard 0/2
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables.replay import Table  # noqa: E402
from tables.table import read_table, write_table  # noqa: E402

from adalora_search.results.references import reference_config  # noqa: E402
from adalora_search.search.objective import TRIAL_ERRORS  # noqa: E402
from adalora_search.search.runner import prepare_data  # noqa: E402
from adalora_search.study.distributions import Choices  # noqa: E402
from adalora_search.study.loader import parse_spec  # noqa: E402
from adalora_search.study.space import build_config, knob, searched_knobs  # noqa: E402
from adalora_search.study.spec import Reference  # noqa: E402
from adalora_search.train.engine import TrialRun  # noqa: E402

REFERENCES_FORMAT = "adalora-search-references/1"


def settings(table: Table, modules: str, alpha: float | None, init_r: int | None) -> tuple[list[str], float, int]:
    """The adapted matrices' names for ``modules`` and the (lora_alpha, init_r) whose scaling LoRA copies: the
    best AdaLoRA configuration of the table on those modules, unless given."""
    on = [c for c in table.data["configs"] if c["params"]["adalora.target_modules"] == modules]
    if not on:
        raise SystemExit(f"--modules {modules!r}: no configuration of the table adapts them")
    best = max(on, key=lambda c: (table.true(c["params"]) or -1) * (1 if table.maximize else -1))
    names = sorted(next(iter(best["runs"].values()))["rank_allocation"])
    spec = parse_spec(table.data["study_file"])
    fixed = {path: best["params"].get(path, knob(spec, path)) for path in ("adalora.lora_alpha", "adalora.init_r")}
    return names, alpha or fixed["adalora.lora_alpha"], init_r or fixed["adalora.init_r"]


def budgets(table: Table) -> list[int]:
    """The table's target_r values (its choices, or the fixed one)."""
    value = knob(parse_spec(table.data["study_file"]), "adalora.target_r")
    return sorted(value.choices) if isinstance(value, Choices) else [value]


def one_run(
    table: Table, names: list[str], modules: str, method: str, r: int, lr: float, seed: int, alpha, init_r, data
) -> dict:
    """Train one reference run and return it in the table's run format (plus ``failure`` when it failed)."""
    spec = parse_spec(table.data["study_file"])
    searched = dict(searched_knobs(spec))
    values = {path: dist.choices[0] if isinstance(dist, Choices) else dist.low for path, dist in searched.items()}
    if "adalora.target_modules" in searched:
        values["adalora.target_modules"] = modules.split(",")
    cfg = build_config(spec, values)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"seed": seed})})
    cfg = cfg.model_copy(update={"adalora": cfg.adalora.model_copy(update={"lora_alpha": alpha, "init_r": init_r})})
    cfg = reference_config(cfg, Reference(kind=method), {n: r for n in names}, lr)
    start = time.perf_counter()
    try:
        run = TrialRun(cfg, data)
        run.train()
        test = run.evaluate("test", final=True) if "test" in data.splits else {}
    except TRIAL_ERRORS as exc:
        return {"state": "FAIL", "failure": f"{type(exc).__name__}: {exc}", "steps": 0, "wall_s": 0.0}
    metric = table.metric
    result = run.result
    return {
        "state": "COMPLETE",
        "validation": result.metrics.get("final", {}),
        "test": test,
        "curve": [{k: h[k] for k in ("step", metric, "eval_loss") if k in h} for h in result.history],
        "steps": result.timing.get("steps"),
        "wall_s": time.perf_counter() - start,
        "trainable_params": result.trainable_params,
    }


def key(method: str, r: int, lr: float, seed: int) -> str:
    return json.dumps([method, r, lr, seed])


def merge(table: Table, work: Path, out: Path, meta: dict) -> int:
    """Every shard's runs into one file; returns how many runs it holds."""
    runs: dict[str, dict] = {}
    for path in sorted(work.glob(f"{table.data['name']}.references.*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                runs.setdefault(key(entry["method"], entry["target_r"], entry["learning_rate"], entry["seed"]), entry)
    write_table({"format": REFERENCES_FORMAT, **meta, "runs": sorted(runs.values(), key=lambda e: key(**_k(e)))}, out)
    return len(runs)


def _k(entry: dict) -> dict:
    return {"method": entry["method"], "r": entry["target_r"], "lr": entry["learning_rate"], "seed": entry["seed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--modules", required=True, help="the target-module choice, as the table writes it")
    parser.add_argument("--methods", nargs="+", default=["lora", "pissa", "dora", "eva"])
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2])
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--init-r", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--hours", type=float, default=None)
    parser.add_argument("--shard", type=lambda v: tuple(int(x) for x in v.split("/")), default=(0, 1))
    parser.add_argument("--out", type=Path, default=None, help="default: beside the table, .references.json.gz")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = Table(read_table(args.table))
    name = table.data["name"]
    work = args.table.resolve().parent / "work"
    work.mkdir(exist_ok=True)
    out = args.out or args.table.with_name(f"{name}.references.json.gz")
    names, alpha, init_r = settings(table, args.modules, args.alpha, args.init_r)
    spec = parse_spec(table.data["study_file"])
    data = prepare_data(spec)
    ranks = budgets(table)
    shard, n = args.shard
    mine = work / f"{name}.references.{shard}of{n}.jsonl"
    lines = [x for p in work.glob(f"{name}.references.*.jsonl") for x in p.read_text().splitlines() if x.strip()]
    done = {key(**_k(json.loads(x))) for x in lines}
    deadline = time.time() + args.hours * 3600 if args.hours else None
    grid = list(itertools.product(args.methods, ranks, args.rates, table.data["seeds"]))
    meta = {"table": name, "modules": args.modules, "matrices": len(names), "lora_alpha": alpha, "init_r": init_r}
    for i, (method, r, lr, seed) in enumerate(grid):
        if i % n != shard or key(method, r, lr, seed) in done:
            continue
        if deadline and time.time() >= deadline:
            break
        run = one_run(table, names, args.modules, method, r, lr, seed, alpha, init_r, data)
        entry = {"method": method, "target_r": r, "learning_rate": lr, "seed": seed, **run}
        with mine.open("a") as f:  # one line per run, appended whole: a cut-off build loses at most that run
            f.write(json.dumps(entry) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] {method} r={r} lr={lr} seed={seed}: {run['state']}", flush=True)
    print(f"wrote {out}: {merge(table, work, out, {**meta, 'methods': args.methods, 'rates': args.rates})} runs")


if __name__ == "__main__":
    main()

"""Build a tabular benchmark (issue #34): a grid study file run once per training seed, then one table file.

A table is a set of real trials: every configuration of the study file's grid, trained once per training
seed (``training.seed``; the data split is the study file's), each with its validation curve at every
evaluation, its final validation and test metrics, optimizer steps, wall time, final rank allocation and
trainable parameters. The trials are run by adalora-search itself: one Optuna study per training seed
(``<name>-s<seed>``, grid sampler) in ``<study dir>/work/<name>.db``. The seeds advance in lockstep (trial
k of every seed before trial k+1 of any): the grid sampler draws its k-th point from the same seed and the
same unvisited points in each study, so every seed visits the grid in the same order, and a table cut
short holds the same configurations for every seed. Stop it at any time (Ctrl-C, ``--hours``); run the
same command again to resume. The table is written (atomically) every ``--export-every`` rounds and at the
end: ``bench/tables/<name>.json.gz`` (``bench/tables/table.py`` reads it).

    python bench/build_table.py bench/tables/t1_bbc_news_minilm.yaml --seeds 0 1 2 --hours 2.5
    python bench/build_table.py bench/tables/t1_bbc_news_minilm.yaml --seeds 0 1 2 --export-only
"""

from __future__ import annotations

import argparse
import itertools
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables.table import TABLE_FORMAT, read_table, write_table  # noqa: E402

from adalora_search.search.record import TrialRecord  # noqa: E402
from adalora_search.search.runner import Budget, open_study, prepare_data, work  # noqa: E402
from adalora_search.study.loader import load_spec  # noqa: E402
from adalora_search.study.space import grid_search_space, optimizer_steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def seeded(spec, seed: int):
    """The study file with this training seed, as the study ``<name>-s<seed>``."""
    training = spec.training.model_copy(update={"seed": seed})
    study = spec.study.model_copy(update={"name": f"{spec.study.name}-s{seed}"})
    return spec.model_copy(update={"training": training, "study": study})


def _prior(out: Path, spec) -> dict:
    """The table already at ``out`` when it is this grid's (same name and space), else an empty one."""
    if not out.exists():
        return {}
    table = read_table(out)
    if table["name"] != spec.study.name or table["space"] != grid_search_space(spec):
        raise SystemExit(f"{out} is the table of another grid ({table['name']}); move it or name another --out")
    return table


def grid_order(spec, order_seed: int) -> list[dict]:
    """Every configuration of the grid (Optuna-encoded parameters), in one fixed shuffled order."""
    space = grid_search_space(spec)
    configs = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    random.Random(order_seed).shuffle(configs)
    return configs


def key(params: dict) -> str:
    return repr(sorted(params.items()))


def counts(t: optuna.trial.FrozenTrial) -> bool:
    """A run that belongs in the table: complete, or failed by the training itself. Not one stopped from
    outside: interrupted (Ctrl-C, SIGTERM) or lost with its process (a stale heartbeat: no ``failure``
    attr); the runner re-queues those and they are run again.
    """
    if t.state == TrialState.FAIL:
        return (t.user_attrs.get("failure") or {}).get("type") not in (None, "Interrupted")
    return t.state.is_finished()


def done(study: optuna.Study) -> set[str]:
    """The configurations that have a run in the table."""
    return {key(t.params) for t in study.get_trials(deepcopy=False) if counts(t)}


def run_rounds(specs: dict, url: str, work_dir: Path, data, args, export, prior: dict) -> None:
    """Configuration k of the fixed order on every seed, for k = 0, 1, ...: a table cut short holds the same
    configurations on every seed. A configuration already run (a resumed build) is skipped; a trial
    interrupted here is re-queued by the runner and run first next time.
    """
    studies = {s: open_study(spec, url) for s, spec in specs.items()}
    earlier = {s: set().union(*(done(st) for st in stored(spec, work_dir))) for s, spec in specs.items()}
    for config in prior.get("configs", []):  # the committed table: what other machines already ran
        for seed in config["runs"]:
            earlier.get(int(seed), set()).add(key(config["params"]))
    order = grid_order(next(iter(specs.values())), args.order_seed)
    deadline = time.time() + args.hours * 3600 if args.hours else None
    rounds = 0
    shard, n_shards = args.shard
    for k, params in enumerate(order):
        if k % n_shards != shard:
            continue
        if (deadline and time.time() >= deadline) or (args.max_rounds and rounds >= args.max_rounds):
            break
        ran = False
        for s, spec in specs.items():
            study = studies[s]
            for _ in range(3):  # a queued retry of another configuration may run first
                if key(params) in earlier[s] or key(params) in done(study):
                    break
                trials = study.get_trials(deepcopy=False)
                if not any(t.state == TrialState.WAITING and key(t.params) == key(params) for t in trials):
                    study.enqueue_trial(params)
                n = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
                work(spec, url, Budget(n + 1, None), work_dir, log=lambda _: None, data=data, study=study)
                ran = True
        if ran:
            rounds += 1
            print(f"[{time.strftime('%H:%M:%S')}] configuration {k + 1} of {len(order)} on every seed", flush=True)
            if rounds % args.export_every == 0:
                export()


def stored(spec, work_dir: Path) -> list[optuna.Study]:
    """This seed's study in every shard's database of the table (``<name>.<i>of<n>.db``), oldest first."""
    out = []
    for db in sorted(work_dir.glob(f"{spec.study.name.rsplit('-s', 1)[0]}.*.db"), key=lambda p: p.stat().st_mtime):
        url = f"sqlite:///{db}"
        if spec.study.name in optuna.get_all_study_names(url):
            out.append(optuna.load_study(study_name=spec.study.name, storage=url))
    return out


def run_entry(trial: optuna.trial.FrozenTrial, metric: str) -> dict:
    """One trained run of a configuration: what a replay reads."""
    r = TrialRecord.of(trial)
    return {
        "state": trial.state.name,
        "number": trial.number,
        "validation": r.metrics.get("final", {}),
        "test": r.metrics.get("test", {}),
        "curve": [{k: h[k] for k in ("step", metric, "eval_loss") if k in h} for h in r.history],
        "steps": r.steps,
        "wall_s": r.timing.get("wall_s"),
        "timing": r.timing,
        "rank_allocation": r.rank_allocation,
        "trainable_params": r.trainable_params,
        "failure": r.failure,
    }


def collect(
    spec_path: Path, specs: dict, work_dir: Path, data_sizes: dict, total_steps: int, order_seed: int, prior: dict
) -> dict:
    """The table: the committed table's runs (``prior``: a build on another machine starts from them), then every
    run in any shard's database not in it yet, keyed by grid parameters and seed (the first one found is kept)."""
    base = load_spec(spec_path)
    metric = base.study.objectives[0].metric
    space = grid_search_space(base)
    configs: dict[str, dict] = {
        key(c["params"]): {"params": dict(c["params"]), "runs": dict(c["runs"])} for c in prior.get("configs", [])
    }
    for seed, spec in specs.items():
        for study in stored(spec, work_dir):
            for t in study.get_trials(deepcopy=False):
                if counts(t):
                    entry = configs.setdefault(key(t.params), {"params": dict(t.params), "runs": {}})
                    entry["runs"].setdefault(str(seed), run_entry(t, metric))
    runs = [r for c in configs.values() for r in c["runs"].values()]
    return {
        "format": TABLE_FORMAT,
        "name": base.study.name,
        "study_file": spec_path.read_text(),
        "space": space,
        "objective": base.study.objectives[0].model_dump(mode="json"),
        "seeds": sorted(specs),
        "data": data_sizes,
        "total_steps": total_steps,
        "commit": _commit(),
        "built": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or ''}",
        "order_seed": order_seed,
        "cpu_hours": round(sum(r["wall_s"] or 0 for r in runs) / 3600, 3),
        "configs": sorted(configs.values(), key=lambda c: key(c["params"])),
    }


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path, help="the table's grid study file (bench/tables/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--hours", type=float, default=None, help="stop claiming new rounds after this long")
    parser.add_argument("--max-rounds", type=int, default=None, help="stop after this many rounds (this run)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--shard",
        type=lambda v: tuple(int(x) for x in v.split("/")),
        default=(0, 1),
        help="I/N: run configurations k with k %% N == I, in a database of its own (N builders at once)",
    )
    parser.add_argument("--order-seed", type=int, default=0, help="seed of the order the grid is run in")
    parser.add_argument("--export-every", type=int, default=10, help="write the table every N rounds")
    parser.add_argument("--export-only", action="store_true", help="write the table from the stored trials")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/tables/<name>.json.gz")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_spec(args.study)
    specs = {s: seeded(spec, s) for s in args.seeds}
    work_dir = args.study.resolve().parent / "work"
    work_dir.mkdir(exist_ok=True)
    shard, n_shards = args.shard
    url = f"sqlite:///{work_dir / spec.study.name}.{shard}of{n_shards}.db"  # one per shard: no claims race
    out = args.out or ROOT / "bench" / "tables" / f"{spec.study.name}.json.gz"
    data = prepare_data(spec)
    sizes = {name: len(split) for name, split in data.splits.items()}
    total = optimizer_steps(spec.training, sizes["train"])

    prior = _prior(out, spec)

    def export() -> None:
        table = collect(args.study, specs, work_dir, sizes, total, args.order_seed, prior)
        write_table(table, out)
        print(f"wrote {out}: {len(table['configs'])} configurations, {table['cpu_hours']} CPU-hours", flush=True)

    if not args.export_only:
        try:
            run_rounds(specs, url, work_dir, data, args, export, prior)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM (the runner's Interrupted)
            print("interrupted: writing the table of what finished", flush=True)
    export()


if __name__ == "__main__":
    main()

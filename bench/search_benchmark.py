"""Search strategies over several seeds (issue #15): anytime curves, not single-seed end points.

Each seed changes the data split seed and the sampler seed. Every arm runs the same study (same
model, data, steps and space) for ``--n-trials`` trials in this process, one after the other, and
records per trial: when it finished (wall s since the arm started), the optimizer steps it used,
its validation score and its test score. From these, the anytime curves: the best validation so far
and the test score of that trial, against cumulative optimizer steps and against wall time.

Arms (``SAMPLER+PRUNER``, each built with the schema's defaults and the seed):
  default        the strategy a study gets when it names no sampler or pruner (TPE, no trial pruning)
  study          the study file's own sampler and pruner (the quickstart's: the default, with seed)
  random         random+none: RandomSampler, no trial pruning
  hf             Trainer.hyperparameter_search (Optuna TPE, its default MedianPruner), bench/hf_hpsearch.py
  tpe+hyperband  HyperbandPruner over optimizer steps, smallest rung at the first evaluation after t_init
  tpe+sha        SuccessiveHalvingPruner, first rung there too
  tpe+median     MedianPruner (the default before this benchmark), after t_init
  gp / gp+median GPSampler; also qmc, percentile, none in any combination (SAMPLER alone: no trial pruning)
  ...@eval_loss  the same, the trial pruner reading eval_loss (study.pruning_metric), e.g. tpe+sha@eval_loss
Output: <out>/<arm>-seed<seed>.json per run (reused when its settings match; --rerun to redo) and
<out>/summary.json (mean ± std over seeds per arm). Plot: bench/plot_search_benchmark.py.

    python bench/search_benchmark.py --smoke                       # tiny model and data, 2 seeds, 3 trials
    python bench/search_benchmark.py --seeds 0 1 2 3 4 --eval-fraction 0.3 --no-baselines \
        --arms random hf default tpe+median tpe+sha tpe+hyperband tpe+sha@eval_loss
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from adalora_search.search.record import TrialRecord
from adalora_search.search.runner import Budget, prepare_data, work
from adalora_search.study import samplers
from adalora_search.study.distributions import Choices, FloatRange
from adalora_search.study.loader import load_spec
from adalora_search.study.space import knob, optimizer_steps
from adalora_search.study.spec import StudySection

ROOT = Path(__file__).resolve().parents[1]
STUDY, SMOKE = ROOT / "studies" / "bbc_news_minilm.yaml", ROOT / "studies" / "smoke.yaml"
SAMPLERS = {"tpe": samplers.TPE, "random": samplers.Random, "gp": samplers.GP, "qmc": samplers.QMC}
PRUNERS = ("median", "percentile", "none", "hyperband", "sha")
ALIASES = {"random": "random+none"}
SKIPPED = {
    "auto": "OptunaHub's AutoSampler is not installed (no optunahub package) and loads its code from the "
    "network at run time",
}


def first_rung(spec, total: int) -> int:
    """Optimizer step of the first evaluation after the latest possible t_init (AdaLoRA's first rank pruning)."""
    schedule, t = spec.adalora.schedule, knob(spec, "adalora.schedule.t_init")
    high = t.high if isinstance(t, FloatRange) else max(t.choices) if isinstance(t, Choices) else t
    t_init = math.floor(high * total) if schedule.unit == "fraction" else int(high)
    every = spec.training.eval_every
    return min((t_init // every + 1) * every, total)


def strategy(spec, arm: str, seed: int, total: int) -> StudySection:
    """The study section an arm runs: its sampler (seeded) and trial pruner, schema defaults otherwise."""
    study = spec.study
    arm, _, pruning_metric = arm.partition("@")
    if arm == "study":
        seeded = study.sampler.root.model_copy(update={"seed": seed})
        return study.model_copy(
            update={"sampler": samplers.SamplerSpec(seeded), "pruning_metric": pruning_metric or study.pruning_metric}
        )
    if arm == "default":  # what a study gets when it names no sampler or pruner
        sampler = samplers.SamplerSpec.default().root.model_copy(update={"seed": seed})
        pruner = samplers.PrunerSpec.default().root
    else:
        sampler_name, _, pruner_name = ALIASES.get(arm, arm).partition("+")
        rung = first_rung(spec, total)
        sampler = SAMPLERS[sampler_name](seed=seed)
        pruner = {
            "median": samplers.Median(),
            "percentile": samplers.Percentile(),
            "none": samplers.NoPruner(),
            "hyperband": samplers.Hyperband(min_resource=rung, max_resource=total),
            "sha": samplers.SuccessiveHalving(min_resource=rung),
        }.get(pruner_name, samplers.PrunerSpec.default().root)
    return study.model_copy(
        update={
            "sampler": samplers.SamplerSpec(sampler),
            "pruner": samplers.PrunerSpec(pruner),
            "prune_warmup": StudySection.model_fields["prune_warmup"].default,
            "pruning_metric": pruning_metric or None,
        }
    )


def check_arm(arm: str) -> str:
    """argparse type: a known arm name, or one listed in SKIPPED (reported, not run)."""
    base, _, pruning_metric = arm.partition("@")
    sampler_name, _, pruner_name = ALIASES.get(base, base).partition("+")
    known = base in ("default", "study") or (sampler_name in SAMPLERS and pruner_name in ("", *PRUNERS))
    if arm in ("hf", *SKIPPED) or (known and pruning_metric in ("", "eval_loss")):
        return arm
    raise argparse.ArgumentTypeError(
        f"unknown arm {arm!r}: use default, study, random, hf or SAMPLER+PRUNER with "
        f"SAMPLER in {sorted(SAMPLERS)} and PRUNER in {list(PRUNERS)}, "
        "optionally @eval_loss"
    )


def variant(spec, args, seed: int):
    """The study with this seed's data split, the evaluation-set options, no references or kept adapters."""
    data = spec.data
    split = data.split.model_copy(update={"seed": seed})
    if args.eval_fraction is not None:
        split = split.model_copy(update={"validation": args.eval_fraction, "test": args.eval_fraction})
    update = {"split": split}
    if args.text == "article":
        update.update(text_fields=["text"], max_length=args.max_length or 128)
    elif args.max_length:
        update["max_length"] = args.max_length
    study = spec.study.model_copy(update={"references": [], "keep_top_k_adapters": 0, "n_trials": args.n_trials})
    out = spec.model_copy(update={"data": data.model_copy(update=update), "study": study})
    return out if args.baselines else out.model_copy(update={"baselines": []})


def our_arm(spec, arm: str, seed: int, total: int, n_trials: int) -> dict:
    name = f"{arm.replace('+', '_').replace('@', '_')}-{seed}"  # Optuna study names: letters, digits, _ . -
    study = strategy(spec, arm, seed, total).model_copy(update={"name": name})
    run = spec.model_copy(update={"study": study})
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/s.db"
        start, start_epoch = time.perf_counter(), time.time()
        work(run, url, Budget(n_trials, None), Path(tmp), log=lambda _: None)
        wall = time.perf_counter() - start
        trials = optuna.load_study(study_name=study.name, storage=url).trials
    metric = spec.study.objectives[0].metric
    log = []
    for t in sorted((t for t in trials if t.datetime_complete), key=lambda t: t.datetime_complete):
        record, done = TrialRecord.of(t), t.state == TrialState.COMPLETE
        log.append(
            {
                "number": t.number,
                "state": t.state.name,
                "baseline": record.baseline,
                "finished_s": t.datetime_complete.timestamp() - start_epoch,
                "steps": record.steps or 0,
                "validation": t.value if done else None,
                "test": record.metric("test", metric) if done else None,
                "history": [
                    {k: h[k] for k in ("step", metric, "eval_loss") if k in h}
                    for h in t.user_attrs.get("history") or []
                ],
            }
        )
    return {
        "wall_s": wall,
        "strategy": {
            "sampler": study.sampler.root.model_dump(),
            "pruner": study.pruner.root.model_dump(),
            "prune_warmup": study.prune_warmup,
            "pruning_metric": study.pruning_metric,
        },
        "trial_log": log,
    }


def hf_arm(spec, seed: int, n_trials: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from hf_hpsearch import run_hf_search

    out = run_hf_search(spec, seed, None, n_trials)
    return {
        "wall_s": out["wall_s"],
        "strategy": {"sampler": "TPESampler(seed)", "pruner": "MedianPruner()"},
        "trial_log": out["trial_log"],
    }


def anytime(log: list[dict]) -> list[dict]:
    """One point per finished trial, in finishing order: cumulative steps, best validation so far (the
    earlier trial on ties) and the test score of that trial; None until a trial completes.
    """
    points, steps, best = [], 0, None
    for trial in sorted(log, key=lambda t: t["finished_s"]):
        steps += trial["steps"]
        if trial["validation"] is not None and (best is None or trial["validation"] > best["validation"]):
            best = trial
        points.append(
            {
                "trial": trial["number"],
                "finished_s": trial["finished_s"],
                "steps": steps,
                "best_validation": best and best["validation"],
                "test_of_best": best and best["test"],
            }
        )
    return points


def run_one(spec, args, arm: str, seed: int, sizes: dict, total: int) -> dict:
    raw = hf_arm(spec, seed, args.n_trials) if arm == "hf" else our_arm(spec, arm, seed, total, args.n_trials)
    log, curve = raw["trial_log"], anytime(raw["trial_log"])
    last = curve[-1] if curve else {}
    return {
        "arm": arm,
        "seed": seed,
        "settings": settings(args),
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "data": sizes,
        **raw,
        "trials": len(log),
        "pruned": sum(t["state"] == "PRUNED" for t in log),
        "optimizer_steps": sum(t["steps"] for t in log),
        "best_validation": last.get("best_validation"),
        "test_of_best": last.get("test_of_best"),
        "curve": curve,
    }


def settings(args) -> dict:
    return {k: getattr(args, k) for k in ("smoke", "n_trials", "eval_fraction", "text", "max_length", "baselines")}


def reach(curve: list[dict], target: float | None) -> dict | None:
    """The first curve point whose best validation is at least ``target``."""
    if target is None:
        return None
    return next((p for p in curve if p["best_validation"] is not None and p["best_validation"] >= target), None)


def stats(values: list) -> dict:
    got = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(got) if got else None,
        "std": statistics.stdev(got) if len(got) > 1 else None,
        "n": len(got),
    }


def at(curve: list[dict], key: str, limit: float) -> dict | None:
    """The last curve point with ``key`` (steps or finished_s) at most ``limit``: the state of a run then."""
    return next((p for p in reversed(curve) if p[key] <= limit), None)


def goals(r: dict, rnd: dict | None, hf: dict | None) -> dict:
    """Issue #15's goals for one run, against random search and the hf arm of the same seed (None without them).

    ``steps_to_random_target_pct``: optimizer steps until the best validation is within 0.5 pt of random
    search's final best, as % of random search's steps. ``test_at_hf_wall``: the test score of the trial
    chosen so far when the hf arm's wall time ran out. ``time_to_hf_best_pct``: wall time until the hf
    arm's final best validation is reached, as % of the hf arm's wall time (for hf itself: its own).
    """
    target = reach(r["curve"], rnd["best_validation"] - 0.005) if rnd and rnd["best_validation"] else None
    hit = reach(r["curve"], hf and hf["best_validation"])
    then = at(r["curve"], "finished_s", hf["wall_s"]) if hf else None
    return {
        "steps_to_random_target_pct": target and 100 * target["steps"] / rnd["optimizer_steps"],
        "test_at_hf_wall": then and then["test_of_best"],
        "time_to_hf_best_s": hit and hit["finished_s"],
        "steps_to_hf_best": hit and hit["steps"],
        "time_to_hf_best_pct": hit and 100 * hit["finished_s"] / hf["wall_s"],
    }


def summarize(raws: list[dict]) -> dict:
    """Per arm, mean ± std over seeds of: steps vs random (%), best validation, test of the chosen trial,
    wall time, and the goals (``goals``) against the random and hf arms of the same seed.
    """
    by = {(r["arm"], r["seed"]): r for r in raws}
    arms = {}
    for arm in dict.fromkeys(r["arm"] for r in raws):
        rows = []
        for r in (r for r in raws if r["arm"] == arm):
            rnd, hf = by.get(("random", r["seed"])), by.get(("hf", r["seed"]))
            rows.append(
                {
                    "seed": r["seed"],
                    "wall_s": r["wall_s"],
                    "optimizer_steps": r["optimizer_steps"],
                    "steps_vs_random_pct": 100 * r["optimizer_steps"] / rnd["optimizer_steps"] if rnd else None,
                    "best_validation": r["best_validation"],
                    "test_of_chosen": r["test_of_best"],
                    **goals(r, rnd, hf),
                    "trials": r["trials"],
                    "pruned": r["pruned"],
                }
            )
        keys = [k for k in rows[0] if k != "seed"]
        arms[arm] = {
            "seeds": [row["seed"] for row in rows],
            **{k: stats([row[k] for row in rows]) for k in keys},
            "reached_hf_best": sum(row["time_to_hf_best_s"] is not None for row in rows),
            "per_seed": rows,
        }
    return arms


def resolution(sizes: dict) -> dict:
    return {split: round(100 / n, 3) for split, n in sizes.items() if split != "train"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (smoke: 0 1)")
    parser.add_argument("--n-trials", type=int, default=None, help="trials per arm (default: the study's; smoke: 3)")
    parser.add_argument("--arms", type=check_arm, nargs="+", default=["default", "study", "random", "hf"])
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=None,
        help="validation and test fraction each (0.3: ~630 headlines each, 1 example = 0.16 pt)",
    )
    parser.add_argument(
        "--text",
        choices=["headline", "article"],
        default="headline",
        help="article: the whole article (text column; max length 128 unless --max-length)",
    )
    parser.add_argument("--max-length", type=int, default=None, help="tokens per example (default: the study's)")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false", help="drop the study's baselines")
    parser.add_argument("--smoke", action="store_true", help="studies/smoke.yaml: tiny model and data")
    parser.add_argument("--out", default=None, help="default bench/results/search_benchmark[_smoke]")
    parser.add_argument("--rerun", action="store_true", help="run again even where a matching result exists")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.seeds = args.seeds or ([0, 1] if args.smoke else [0, 1, 2])
    spec = load_spec(SMOKE if args.smoke else STUDY)
    args.n_trials = args.n_trials or (3 if args.smoke else spec.study.n_trials)
    name = "search_benchmark_smoke" if args.smoke else "search_benchmark"
    out = Path(args.out or ROOT / "bench" / "results" / name)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {arm: SKIPPED[arm] for arm in args.arms if arm in SKIPPED}
    for arm, why in skipped.items():
        print(f"[skip] {arm}: {why}", flush=True)
    raws, sizes = [], {}
    for seed in args.seeds:
        seeded = variant(spec, args, seed)
        data = prepare_data(seeded)  # builds the token cache outside every arm's clock
        sizes[seed] = {name: len(split) for name, split in data.splits.items()}
        total = optimizer_steps(seeded.training, sizes[seed]["train"])
        for arm in (a for a in args.arms if a not in SKIPPED):
            path = out / f"{arm}-seed{seed}.json"
            old = json.loads(path.read_text()) if path.exists() else None
            if old is None or args.rerun or old["settings"] != settings(args):
                old = run_one(
                    seeded, args, arm, seed, {**sizes[seed], "pt_per_example": resolution(sizes[seed])}, total
                )
                path.write_text(json.dumps(old, indent=1))
            raws.append(old)
            print(
                f"[{arm} seed {seed}] {old['trials']} trials ({old['pruned']} pruned), {old['optimizer_steps']} "
                f"steps, {old['wall_s']:.0f} s, best validation {old['best_validation']}, "
                f"its test {old['test_of_best']}",
                flush=True,
            )
    summary = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "settings": settings(args),
        "seeds": args.seeds,
        "data": {str(s): {**n, "pt_per_example": resolution(n)} for s, n in sizes.items()},
        "skipped": skipped,
        "arms": summarize(raws),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}/summary.json; 1 example = {resolution(sizes[args.seeds[0]])} pt", flush=True)


if __name__ == "__main__":
    main()

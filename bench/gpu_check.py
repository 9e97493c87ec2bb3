"""GPU check in one call: correctness, step figures, trials/hour per worker count, profile, OOM.

Sections, in this order, each printed and written to ``--out`` as it finishes (a timeout keeps
what is done; a section that raises is recorded under ``errors`` and the next one runs):

1. ``correctness``: pretrained MiniLM on BBC News headlines, the quickstart study's shuffled,
   stratified split (studies/bbc_news_minilm.yaml), its best trial's settings fixed; trained on
   CUDA (bf16 autocast) and on the CPU (fp32); both validation accuracies, |CUDA - CPU| <= 1 pt.
2. ``steps``: AdaLoRA (init_r 12 -> target_r 4, delta_t 1) against LoRA at r = init_r on the same
   matrices: step time, tokens/s, GPU utilisation (NVML, 100 ms samples), peak memory, for
   MiniLM-L6, BERT-base, SmolLM2-135M and a ~0.5 B Llama decoder (both bf16 weights).
3. ``workers``: ``adalora-search run STUDY --workers-per-gpu N`` (N = 1, 2, 4, 8) on a short MiniLM
   study, fresh SQLite each; trials/hour = finished trials / wall-clock hours.
4. ``compile``: the same AdaLoRA and LoRA steps with ``training.compile`` (modes ``default`` and
   ``reduce-overhead``, CUDA graphs), every batch padded to ``max_length`` (one graph); step time,
   tokens/s, utilisation, peak memory, compile seconds; against the eager figures of ``steps``.
4b. ``profile``: torch.profiler, top-10 operators by self CPU time over 20 AdaLoRA steps of MiniLM.
5. ``oom``: a trial far too large for the card fails with its reason, the next one runs (CUDA only).
6. ``parallel``: one trial on 1 vs N processes (``--gpus-per-trial``: NCCL, one per visible GPU; gloo, 2
   CPU processes without one): wall time, tokens/s, same allocation and accuracy (bench/_gpu_multi.py).
7. ``device_map``: BERT-base with ``model.device_map: auto`` across the visible GPUs (CUDA only).

Goals are printed PASS/MISS beside the figures and kept under ``goals``. ``--smoke`` shrinks
everything (tiny shapes and step counts, 1 and 2 workers) so the whole script runs on a CPU.

Ready to run on a lent GPU machine, which has no package registry. First, here and at no device
time, in the checkout the call sends (the session's own, not a helper's worktree),
``python bench/gpu_carry.py`` fills the git-ignored ``.devcarry/`` (60 MiB of the 64 MiB a call
carries: the wheels the image lacks, MiniLM with fp16-stored weights, SmolLM2's config and
tokenizer). Then one device call, which installs them and runs every section into ``$OUT``::

    run(command="bash bench/gpu_device.sh", carry=[".devcarry"], timeout_s=600)

No section starts after ``--time-budget`` (510 s), so the call ends inside its 600 s; sizes and
what the machine is assumed to have: BENCHMARKS.md §5, "Ready to run".

On a CPU: ``python bench/gpu_check.py --smoke --out /tmp/gpu_check.json`` (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _gpu_multi  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from _gpu_parts import (  # noqa: E402
    BEST,
    CUDA,
    TOY_BERT,
    free,
    lora_twin,
    profile_top,
    quickstart_study,
    step_models,
    step_spec,
    timed_run,
    with_device,
)

from adalora_search.errors import TrialFailure  # noqa: E402
from adalora_search.search.runner import prepare_data  # noqa: E402
from adalora_search.study.loader import parse_spec  # noqa: E402
from adalora_search.study.space import sample  # noqa: E402
from adalora_search.study.spec import CompileSpec  # noqa: E402
from adalora_search.train.data import Split, TokenizedData  # noqa: E402
from adalora_search.train.engine import TrialRun  # noqa: E402

SECTIONS = ("correctness", "steps", "compile", "workers", "profile", "oom", "parallel", "device_map")
COMPILE_ARMS = {
    "adalora_default": ("adalora", "default"),
    "adalora_reduce_overhead": ("adalora", "reduce-overhead"),
    "lora_reduce_overhead": ("lora", "reduce-overhead"),
}


def correctness(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    spec = parse_spec(yaml.safe_dump(quickstart_study(args.smoke)))
    data = prepare_data(spec)
    cfg = sample(spec, optuna.trial.FixedTrial({}))
    out: dict[str, Any] = {
        "settings": {**BEST, "learning_rate": cfg.training.learning_rate},
        "rows": {k: len(v) for k, v in data.splits.items()},
        "cuda": None,
    }
    for device in (["cuda"] if CUDA else []) + ["cpu"]:
        free()
        result = TrialRun(with_device(cfg, device), data).train()
        metrics, timing = result.metrics, result.timing
        out[device] = {
            "accuracy": metrics["final"]["accuracy"],
            "best_accuracy": metrics["best"]["accuracy"],
            "steps": timing["steps"],
            "train_s": timing["train_s"],
        }
        print(f"  {device}: {out[device]}", flush=True)
    diff = abs(out["cuda"]["accuracy"] - out["cpu"]["accuracy"]) * 100 if out["cuda"] else None
    out.update(abs_diff_pt=None if diff is None else round(diff, 2), within_1pt=None if diff is None else diff <= 1)
    return out


def steps(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    total, warm = (4, 1) if args.smoke else (30, 5)
    rows = {}
    for name, row in step_models(args.smoke).items():
        if name not in args.models or time.monotonic() > deadline:
            continue
        try:
            cfg, data = step_spec(row, total)
            run, adalora = timed_run(cfg, data, warm)
            twin = lora_twin(cfg, run)
            del run
            lora = timed_run(twin, data, warm)[1]
        except Exception:  # noqa: BLE001 - the next model still runs
            rows[name] = {"error": traceback.format_exc()[-2000:]}
        else:
            rows[name] = {
                "batch": row["batch"],
                "max_length": row["data"]["max_length"],
                "adalora": adalora,
                "lora": lora,
                "ratio_adalora_vs_lora": round(adalora["step_ms"] / lora["step_ms"], 3),
            }
        print(f"  {name}: {json.dumps(rows[name])}", flush=True)
    return rows


def compile(args: argparse.Namespace, deadline: float) -> dict[str, Any]:  # noqa: A001 - the section's name
    """Compiled steps per model (``COMPILE_ARMS``); the eager ones are the ``steps`` section's."""
    total, warm = (5, 3) if args.smoke else (40, 10)
    rows: dict[str, Any] = {}
    for name, row in step_models(args.smoke).items():
        if name not in args.compile_models or time.monotonic() > deadline:
            continue
        fixed = {**row, "data": {**row["data"], "pad_to_multiple_of": row["data"]["max_length"]}}
        rows[name] = {}
        try:
            cfg, data = step_spec(fixed, total)
            run = TrialRun(cfg, data)
            lora = lora_twin(cfg, run)
            del run
            for arm, (method, mode) in COMPILE_ARMS.items():
                if time.monotonic() > deadline:
                    break
                base = lora if method == "lora" else cfg
                compiled = base.model_copy(
                    update={"training": base.training.model_copy(update={"compile": CompileSpec(mode=mode)})}
                )
                run, figures = timed_run(compiled, data, warm)
                rows[name][arm] = {**figures, "compile": run.result.timing.get("compile")}
                del run
        except Exception:  # noqa: BLE001 - the next model still runs
            rows[name]["error"] = traceback.format_exc()[-2000:]
        arms = rows[name]
        if "adalora_reduce_overhead" in arms and "lora_reduce_overhead" in arms:
            arms["ratio_adalora_vs_lora_compiled"] = round(
                arms["adalora_reduce_overhead"]["step_ms"] / arms["lora_reduce_overhead"]["step_ms"], 3
            )
        print(f"  {name}: {json.dumps(rows[name])}", flush=True)
    return rows


def workers_study(smoke: bool, n_trials: int) -> dict[str, Any]:
    """The quickstart's search space on short trials (no references, no pruning)."""
    study = yaml.safe_load((Path(__file__).resolve().parents[1] / "studies" / "bbc_news_minilm.yaml").read_text())
    study.pop("baselines")
    study["study"].update(
        n_trials=n_trials,
        references=[],
        keep_top_k_adapters=0,
        sampler={"type": "random", "seed": 0},
        pruner={"type": "none"},
    )
    study["training"].update(epochs=None, max_steps=6 if smoke else 30, eval_every=3 if smoke else 15)
    study["data"].update(max_train_samples=96 if smoke else 960, max_eval_samples=32 if smoke else 200)
    if smoke:
        study["model"] = {"name_or_path": "minilm-l6", "init": "random", "config_overrides": TOY_BERT}
    return study


def cli_run(n: int, smoke: bool, directory: Path, timeout: float) -> dict[str, Any]:
    """``adalora-search run`` with ``--workers-per-gpu n`` on a fresh SQLite file; trials/hour."""
    per_worker = 2 if smoke else 3
    study = workers_study(smoke, per_worker * n)
    name = study["study"]["name"] = f"gpu_workers_{n}"
    path, url, log = directory / f"{name}.yaml", f"sqlite:///{directory / name}.db", directory / f"{name}.log"
    path.write_text(yaml.safe_dump(study))
    cmd = [sys.executable, "-m", "adalora_search", "run", str(path), "--workers-per-gpu", str(n), "--storage", url]
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | str = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = "killed at the time budget"
    wall = time.perf_counter() - start
    row: dict[str, Any] = {"workers": n, "exit": code, "wall_s": round(wall, 1)}
    try:
        trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:
        trials = []
    done = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    row.update(finished_trials=len(done), trials_per_hour=round(3600 * len(done) / wall, 1))
    if done:  # first trial start to last trial end: without process start-up and data preparation
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        row.update(
            in_storage_span_s=round(span, 1),
            trials_per_hour_in_storage=round(3600 * len(done) / span, 1),
            median_trial_s=round(statistics.median(t.user_attrs["timing"]["wall_s"] for t in done), 2),
        )
    if code != 0:
        row["log_tail"] = log.read_text()[-2000:]
    return row


def workers(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    reserve = 45 * ("profile" in args.sections) + 30 * ("oom" in args.sections and CUDA)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2) if args.smoke else (1, 2, 4, 8):
            left = deadline - time.monotonic() - reserve
            rows.append(cli_run(n, args.smoke, Path(tmp), left) if left > 20 else {"workers": n, "skipped": "time"})
            print(f"  {json.dumps({k: v for k, v in rows[-1].items() if k != 'log_tail'})}", flush=True)
    rate = {r["workers"]: r.get("trials_per_hour") for r in rows}
    most = max(n for n, v in rate.items() if v) if any(rate.values()) else None
    speedup = round(rate[most] / rate[1], 2) if most and rate.get(1) else None
    return {"rows": rows, "most_workers": most, "speedup_vs_1_worker": speedup}


def profile(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    wait, active = (1, 4) if args.smoke else (3, 20)
    cfg, data = step_spec(step_models(args.smoke)["minilm-l6"], wait + 2 + active)
    free()
    out = profile_top(TrialRun(cfg, data), wait, active)
    for row in out["top"]:
        print(f"  {row['self_cpu_ms_per_step']:9.3f} ms/step  {row['calls_per_step']:7.1f} calls  {row['name']}")
    return out


def oom(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """A 65,536 x 512-token BERT-base batch must fail its trial with the reason; the next trial must run."""
    huge, data = step_spec({**step_models(False)["bert-base"], "batch": 65536}, 2)
    big = TokenizedData(
        {
            "train": Split({"input_ids": [list(range(101, 613))] * 65536, "labels": [0] * 65536}),
            "validation": data.splits["validation"],
        },
        data.label_names,
        data.pad_token_id,
    )
    try:
        TrialRun(huge, big).train()
        failure = None
    except TrialFailure as exc:
        failure = str(exc)[:200]
    free()
    cfg, data = step_spec(step_models(False)["minilm-l6"], 20)
    run, after = timed_run(cfg, data, 5)
    return {"oom_failure": failure, "next_trial_ok": run.result.timing["steps"] == 20, "next_trial": after}


def parallel(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    return _gpu_multi.parallel(args.smoke)


def device_map(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    return _gpu_multi.device_map(args.smoke)


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its value and PASS / MISS; n/a where the figure is missing (no GPU) or toy (smoke)."""
    out = []

    def add(goal: str, value: Any, ok: bool | None) -> None:
        ok = None if report["meta"]["smoke"] else ok
        out.append({"goal": goal, "value": value, "status": "n/a" if ok is None else "PASS" if ok else "MISS"})

    c = report.get("correctness") or {}
    if "cpu" in c:
        add("|CUDA bf16 - CPU fp32| validation accuracy <= 1 pt", c["abs_diff_pt"], c["within_1pt"])
    rows = {k: v for k, v in (report.get("steps") or {}).items() if "error" not in v}
    for name, limit, goal in (
        ("bert-base", 60, "GPU utilisation >= 60 % at BERT-base batch 32 (AdaLoRA)"),
        ("decoder-0.5b", 80, "GPU utilisation >= 80 % on the 0.5 B decoder (AdaLoRA)"),
    ):
        if name in rows:
            util = rows[name]["adalora"]["gpu_util_pct"]
            add(goal, util, None if util is None else util >= limit)
    for name, row in rows.items():
        ratio = row["ratio_adalora_vs_lora"]
        add(f"{name}: AdaLoRA step <= 1.10x LoRA step", ratio, ratio <= 1.10)
    compiled = {k: v for k, v in (report.get("compile") or {}).items() if "error" not in v}
    for name, limit in (("bert-base", 60), ("decoder-0.5b", 80)):
        if name in compiled:
            arms = compiled[name]
            utils = [
                arms[k]["gpu_util_pct"]
                for k in ("adalora_default", "adalora_reduce_overhead")
                if k in arms and arms[k]["gpu_util_pct"] is not None
            ]
            best = max(utils) if utils else None
            add(
                f"compiled: GPU utilisation >= {limit} % on {name} (AdaLoRA, best mode)",
                best,
                None if best is None else best >= limit,
            )
    for name, row in compiled.items():
        if "ratio_adalora_vs_lora_compiled" in row:
            ratio = row["ratio_adalora_vs_lora_compiled"]
            add(f"{name}: compiled AdaLoRA step <= 1.05x compiled LoRA step", ratio, ratio <= 1.05)
    w = report.get("workers") or {}
    if "rows" in w:
        ok = None if w["speedup_vs_1_worker"] is None or w["most_workers"] != 8 else w["speedup_vs_1_worker"] >= 4
        add(f"trials/hour at 8 workers >= 4x 1 worker (measured at {w['most_workers']})", w["speedup_vs_1_worker"], ok)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file, rewritten after each section")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and step counts (runs on a CPU)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument(
        "--models", default="minilm-l6,bert-base,smollm2-135m,decoder-0.5b", help="step-figure models (section steps)"
    )
    parser.add_argument(
        "--compile-models",
        default="bert-base,decoder-0.5b",
        help="compiled-step models (section compile; each compiles 3 graphs on the host's CPUs)",
    )
    parser.add_argument("--time-budget", type=float, default=510, help="seconds; no section starts after it")
    args = parser.parse_args()
    args.sections, args.models = args.sections.split(","), args.models.split(",")
    args.compile_models = args.compile_models.split(",")
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {SECTIONS}")
    start = time.monotonic()
    deadline = start + args.time_budget if args.time_budget > 0 else math.inf
    report: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "argv": sys.argv[1:],
            "smoke": args.smoke,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "device": torch.cuda.get_device_name() if CUDA else "cpu",
        },
        "errors": {},
    }
    for name in [s for s in SECTIONS if s in args.sections]:
        print(f"== {name} (at {time.monotonic() - start:.0f} s)", flush=True)
        if time.monotonic() > deadline:
            report[name] = {"skipped": "time budget spent"}
        elif name == "oom" and not CUDA:
            report[name] = {"skipped": "no CUDA"}
        else:
            try:
                report[name] = globals()[name](args, deadline)
            except Exception:  # noqa: BLE001 - one broken section must not lose the others
                report["errors"][name] = traceback.format_exc()[-3000:]
                print(report["errors"][name], flush=True)
        report["goals"] = goals(report)
        report["meta"]["elapsed_s"] = round(time.monotonic() - start, 1)
        Path(args.out).write_text(json.dumps(report, indent=2))
    for g in report["goals"]:
        print(f"GOAL {g['status']:4} {g['goal']}: {g['value']}")


if __name__ == "__main__":
    main()

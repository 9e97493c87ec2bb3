"""bench/search_benchmark.py: arms as strategies, anytime curves, and its smoke mode end to end."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from adalora_search.study.loader import load_spec
from adalora_search.study.samplers import TPE, Hyperband, Median, NoPruner, Random

sys.path.insert(0, str(REPO / "bench"))
import search_benchmark as sb  # noqa: E402


def test_arms_are_schema_default_strategies_with_the_seed():
    spec = load_spec(sb.STUDY)  # quickstart: t_init up to 0.2 of the steps, an evaluation every 20 steps
    assert sb.first_rung(spec, 159) == 40  # t_init <= 31 steps: the first evaluation after it
    default = sb.strategy(spec, "default", 3, 159)  # the schema's: TPE, no trial pruning (BENCHMARKS §3)
    assert default.sampler.root == TPE(seed=3) and default.pruner.root == NoPruner()
    assert default.prune_warmup == "after_t_init"
    assert sb.strategy(spec, "tpe+median", 3, 159).pruner.root == Median()
    assert sb.strategy(spec, "gp", 3, 159).pruner.root == NoPruner()
    random = sb.strategy(spec, "random", 3, 159)
    assert random.sampler.root == Random(seed=3) and random.pruner.root == NoPruner()
    hyperband = sb.strategy(spec, "tpe+hyperband", 3, 159)
    assert hyperband.pruner.root == Hyperband(min_resource=40, max_resource=159)
    study = sb.strategy(spec, "study", 3, 159)  # the file's own, with this seed
    assert study.sampler.root == spec.study.sampler.root.model_copy(update={"seed": 3})
    assert study.pruner.root == spec.study.pruner.root
    for bad in ("tpe+bogus", "hf@eval_loss", "tpe+sha@accuracy"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"unknown arm '{re.escape(bad)}'"):
            sb.check_arm(bad)
    assert sb.strategy(spec, sb.check_arm("study@eval_loss"), 3, 159).pruning_metric == "eval_loss"
    assert sb.check_arm("auto") in sb.SKIPPED  # known, reported as not run
    on_loss = sb.strategy(spec, sb.check_arm("tpe+sha@eval_loss"), 3, 159)
    assert on_loss.pruning_metric == "eval_loss" and default.pruning_metric is None


def test_anytime_curve_keeps_the_first_best_and_counts_pruned_steps():
    log = [
        {"number": 0, "finished_s": 5.0, "steps": 10, "validation": None, "test": None},  # pruned first
        {"number": 1, "finished_s": 9.0, "steps": 20, "validation": 0.8, "test": 0.7},
        {"number": 3, "finished_s": 14.0, "steps": 20, "validation": 0.8, "test": 0.9},  # a tie: not chosen
        {"number": 2, "finished_s": 12.0, "steps": 5, "validation": 0.6, "test": 0.95},
    ]
    curve = sb.anytime(log)
    assert [p["trial"] for p in curve] == [0, 1, 2, 3]  # finishing order
    assert [p["steps"] for p in curve] == [10, 30, 35, 55]
    assert [p["best_validation"] for p in curve] == [None, 0.8, 0.8, 0.8]
    assert [p["test_of_best"] for p in curve] == [None, 0.7, 0.7, 0.7]
    assert sb.reach(curve, 0.75)["finished_s"] == 9.0 and sb.reach(curve, 0.81) is None
    assert sb.at(curve, "finished_s", 13.0)["trial"] == 2 and sb.at(curve, "steps", 9) is None


def test_goals_against_random_and_hf_of_the_same_seed():
    def run(points, steps, wall):  # (finished_s, steps so far, best validation, its test)
        curve = [{"finished_s": f, "steps": n, "best_validation": v, "test_of_best": t} for f, n, v, t in points]
        return {
            "curve": curve,
            "optimizer_steps": steps,
            "wall_s": wall,
            "best_validation": curve[-1]["best_validation"],
        }

    rnd = run([(10, 100, 0.80, 0.7), (20, 200, 0.90, 0.8)], 200, 20)
    hf = run([(5, 30, 0.85, 0.8), (30, 90, 0.88, 0.85)], 90, 30)
    ours = run([(4, 40, 0.86, 0.82), (8, 70, 0.896, 0.9), (40, 150, 0.91, 0.91)], 150, 40)
    got = sb.goals(ours, rnd, hf)
    assert got["steps_to_random_target_pct"] == 35.0  # 0.896 >= 0.90 - 0.005 at 70 of random's 200 steps
    assert got["test_at_hf_wall"] == 0.9  # at hf's 30 s: the trial chosen at 8 s
    assert got["time_to_hf_best_s"] == 8 and got["time_to_hf_best_pct"] == pytest.approx(100 * 8 / 30)
    assert sb.goals(ours, None, None) == {k: None for k in got}


def _finished(trial: dict) -> float:
    return trial["finished_s"]


@pytest.mark.slow
def test_smoke_run_writes_raw_runs_summary_and_plot(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [
        sys.executable,
        str(REPO / "bench" / "search_benchmark.py"),
        "--smoke",
        "--arms",
        "default",
        "random",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and list(summary["arms"]) == ["default", "random"]
    for arm, seed in itertools.product(["default", "random"], [0, 1]):
        raw = json.loads((out / f"{arm}-seed{seed}.json").read_text())
        assert raw["strategy"]["sampler"]["seed"] == seed
        assert raw["data"]["pt_per_example"]["validation"] == pytest.approx(100 / raw["data"]["validation"], abs=1e-3)
        log, curve = sorted(raw["trial_log"], key=_finished), raw["curve"]
        assert raw["trials"] == len(log) == len(curve) == 3
        assert [p["steps"] for p in curve] == list(itertools.accumulate(t["steps"] for t in log))
        assert all(t["steps"] > 0 for t in log) and raw["optimizer_steps"] == curve[-1]["steps"]
        times = [p["finished_s"] for p in curve]
        assert times == sorted(times) and times[0] > 0
        best = [p["best_validation"] for p in curve if p["best_validation"] is not None]
        assert best == sorted(best) and best[-1] == raw["best_validation"]
        assert raw["best_validation"] == max(t["validation"] for t in log if t["validation"] is not None)
        chosen = next(t for t in log if t["validation"] == raw["best_validation"])
        assert raw["test_of_best"] == chosen["test"] is not None
    random = summary["arms"]["random"]
    assert random["steps_vs_random_pct"] == {"mean": 100.0, "std": 0.0, "n": 2} and random["pruned"]["mean"] == 0
    assert set(summary["arms"]["default"]) >= {"best_validation", "test_of_chosen", "time_to_hf_best_s", "per_seed"}
    plot = subprocess.run(
        [sys.executable, str(REPO / "bench" / "plot_search_benchmark.py"), "--results", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert (out / "anytime.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_trial_cost_bench_runs(tmp_path) -> None:
    """#36 item 6: bench/trial_cost.py, the script behind BENCHMARKS §1, failed (TrialRun's signature changed)."""
    out = tmp_path / "tc.json"
    cmd = [sys.executable, str(REPO / "bench" / "trial_cost.py"), "--repeats", "1", "--steps", "4", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    result = json.loads(out.read_text())
    assert result["summary"]["speedup_end_to_end"] > 0 and result["summary"]["speedup_steps_per_s"] > 0

"""Tabular benchmarks (issue #34): the table file, the replay harness and its statistics, on tiny tables."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, study_dict, write_study

sys.path.insert(0, str(REPO / "bench"))
from tables import arms, stats  # noqa: E402
from tables.replay import Arm, Table, distributions, replay, snap  # noqa: E402
from tables.table import TABLE_FORMAT, TableError, check_table, read_table, write_table  # noqa: E402

LRS = [1e-3, 1e-2, 1e-1]
MODULES = ["a", "b"]
# true validation accuracy per configuration (mean over both seeds): the best is (1e-2, "b"), the worst (1e-1, "a")
TRUE = {
    (1e-3, "a"): 0.60,
    (1e-2, "a"): 0.70,
    (1e-1, "a"): 0.40,
    (1e-3, "b"): 0.65,
    (1e-2, "b"): 0.90,
    (1e-1, "b"): 0.50,
}
STUDY_FILE = yaml.safe_dump(
    {"training": {"eval_every": 4}, "adalora": {"schedule": {"unit": "fraction", "t_init": 0.25}}}
)


def run(value: float, test: float, steps: int = 12) -> dict:
    """A run whose curve rises linearly to ``value`` at evaluations every 4 steps."""
    curve = [{"step": s, "accuracy": value * s / steps, "eval_loss": 1 - value * s / steps} for s in (4, 8, 12)]
    return {
        "state": "COMPLETE",
        "validation": {"accuracy": value, "eval_loss": 1 - value},
        "test": {"accuracy": test},
        "curve": curve,
        "steps": steps,
        "wall_s": 6.0,
    }


def tiny_table() -> dict:
    """Two seeds per configuration, ±0.02 around the true value (seed 0 above, seed 1 below); test = true - 0.05."""
    configs = [
        {
            "params": {"training.learning_rate": lr, "adalora.target_modules": m},
            "runs": {
                "0": run(TRUE[lr, m] + 0.02, TRUE[lr, m] - 0.05),
                "1": run(TRUE[lr, m] - 0.02, TRUE[lr, m] - 0.05),
            },
        }
        for lr, m in itertools.product(LRS, MODULES)
    ]
    return {
        "format": TABLE_FORMAT,
        "name": "tiny",
        "study_file": STUDY_FILE,
        "space": {"training.learning_rate": LRS, "adalora.target_modules": MODULES},
        "objective": {"metric": "accuracy", "direction": "maximize"},
        "seeds": [0, 1],
        "total_steps": 12,
        "commit": "x",
        "built": "2026-12-08",
        "cpu_hours": 0.1,
        "configs": configs,
    }


def test_true_means_extremes_and_regret_are_the_known_values():
    table = Table(tiny_table())
    assert table.complete and table.n_grid == 6
    assert table.true({"training.learning_rate": 1e-2, "adalora.target_modules": "b"}) == pytest.approx(0.90)
    assert table.true({"training.learning_rate": 1e-2, "adalora.target_modules": "b"}, "test") == pytest.approx(0.85)
    assert table.extremes() == pytest.approx((0.90, 0.40))
    assert stats.regret(table, {"training.learning_rate": 1e-2, "adalora.target_modules": "b"}) == pytest.approx(0)
    assert stats.regret(table, {"training.learning_rate": 1e-1, "adalora.target_modules": "a"}) == pytest.approx(1)
    assert stats.regret(table, {"training.learning_rate": 1e-2, "adalora.target_modules": "a"}) == pytest.approx(0.4)
    assert stats.regret(table, None) == 1.0
    assert table.first_rung() == 4  # t_init 0.25 of 12 steps = 3: the first evaluation after it


def test_a_search_of_the_whole_grid_chooses_the_best_observed_run():
    table = Table(tiny_table())
    out = replay(table, arms.arm("random", 4, 12), seed=3, n_trials=40)
    assert len(out.queries) == 40 and {q.state for q in out.queries} == {"COMPLETE"}
    best = max(out.queries, key=lambda q: q.value)
    assert out.chosen() == best.params
    assert best.value == pytest.approx(0.92)  # the best configuration's seed-0 run (every config was seen)
    assert out.cost() == (40 * 12, pytest.approx(40 * 6.0))
    assert {q.seed for q in out.queries} == {"0", "1"}  # both seeds' runs answer


def test_paired_replays_share_start_up_draws_and_run_seeds():
    table = Table(tiny_table())
    rnd = replay(table, arms.arm("random", 4, 12), seed=7, n_trials=12)
    tpe = replay(table, arms.arm("default", 4, 12), seed=7, n_trials=12)
    assert [(q.params, q.seed) for q in rnd.queries[:10]] == [(q.params, q.seed) for q in tpe.queries[:10]]
    again = replay(table, arms.arm("random", 4, 12), seed=7, n_trials=12)
    assert [q.params for q in again.queries] == [q.params for q in rnd.queries]  # deterministic


def test_a_pruner_acts_on_the_real_curve_and_its_cost_stops_there():
    table = Table(tiny_table())
    always = Arm("always", lambda seed: arms.SAMPLERS["random"](seed), lambda: _Always(), prune_from=8)
    out = replay(table, always, seed=0, n_trials=5)
    assert {q.state for q in out.queries} == {"PRUNED"} and {q.steps for q in out.queries} == {8}  # not before 8
    assert out.queries[0].seconds == pytest.approx(6.0 * 8 / 12)
    assert out.chosen() is None and stats.regret(table, out.chosen()) == 1.0
    loss = Arm("loss", arms.SAMPLERS["random"], lambda: _Record(), pruning_metric="eval_loss")
    seen = replay(table, loss, seed=0, n_trials=1)
    value = seen.queries[0].value
    assert _Record.last == [pytest.approx(-(1 - value * s / 12)) for s in (4, 8)]  # eval_loss negated, 12 is final


def test_the_chosen_configuration_skips_pruned_trials():
    table = Table(tiny_table())
    every_other = Arm("odd", arms.SAMPLERS["random"], lambda: _EveryOther(), prune_from=4)
    out = replay(table, every_other, seed=1, n_trials=8)
    assert [q.state for q in out.queries] == ["COMPLETE", "PRUNED"] * 4
    done = [q for q in out.queries if q.state == "COMPLETE"]
    assert out.chosen() == max(done, key=lambda q: q.value).params


class _EveryOther(__import__("optuna").pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1


class _Always(__import__("optuna").pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


class _Record(__import__("optuna").pruners.BasePruner):
    last: list[float] = []

    def prune(self, study, trial) -> bool:
        _Record.last = [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        return False


def test_numeric_knobs_are_ranges_snapped_to_the_grid():
    dists = distributions({"lr": LRS, "m": MODULES, "r": [12, 16]}, "snap")
    assert dists["lr"].log and (dists["lr"].low, dists["lr"].high) == (1e-3, 1e-1)
    assert type(dists["m"]).__name__ == type(dists["r"]).__name__ == "CategoricalDistribution"  # two choices
    assert snap(4e-3, LRS, dists["lr"]) == 1e-2 and snap(2e-3, LRS, dists["lr"]) == 1e-3  # nearest in log scale
    assert type(distributions({"lr": LRS}, "categorical")["lr"]).__name__ == "CategoricalDistribution"


def test_a_partial_table_answers_with_the_nearest_configuration_it_holds():
    data = tiny_table()
    data["configs"] = [c for c in data["configs"] if c["params"]["training.learning_rate"] == 1e-3]
    table = Table(data)
    assert table.nearest({"training.learning_rate": 1e-1, "adalora.target_modules": "b"}) == {
        "training.learning_rate": 1e-3,
        "adalora.target_modules": "b",
    }
    out = replay(table, arms.arm("random", 4, 12), seed=0, n_trials=6, numeric="categorical")
    assert not table.complete and len(out.queries) == 6 and out.substituted > 0
    assert {q.params["training.learning_rate"] for q in out.queries} == {1e-3}
    assert replay(Table(tiny_table()), arms.arm("random", 4, 12), seed=0, n_trials=6).substituted == 0


def test_statistics_rank_random_to_grid_and_p_values():
    table = Table(tiny_table())
    best = {"training.learning_rate": 1e-2, "adalora.target_modules": "b"}
    oracle = Arm("oracle", arms.SAMPLERS["random"], enqueue=lambda t: [best])
    reps = {
        "random": [replay(table, arms.arm("random", 4, 12), s, 2) for s in range(30)],
        "oracle": [replay(table, oracle, s, 2) for s in range(30)],
    }
    assert all(r.queries[0].warm and r.queries[0].params == best for r in reps["oracle"])
    summary = stats.summarize(table, reps, [1, 2], default="oracle")
    one = summary["1"]
    assert one["oracle"]["regret"]["mean"] == pytest.approx(0) and one["oracle"]["random_to_grid"] == pytest.approx(1)
    assert one["random"]["random_to_grid"] == pytest.approx(0)
    assert one["oracle"]["mean_rank"] < one["random"]["mean_rank"]
    assert one["oracle"]["p_vs_random"] < 0.01 and one["random"]["p_vs_random"] == 1.0
    assert one["oracle"]["true_test"]["mean"] == pytest.approx(0.85)
    assert stats.wilcoxon_p(np.zeros(5), np.zeros(5)) == 1.0
    assert stats.mean_ranks({"a": np.array([0.1, 0.2]), "b": np.array([0.3, 0.2])}) == {"a": 1.25, "b": 1.75}
    curve = stats.anytime(table, reps["oracle"], [0, 12, 24])
    assert curve[0] == 1.0 and curve[1] == pytest.approx(0) and curve[2] == pytest.approx(0)


def test_a_table_that_does_not_match_its_space_is_refused(tmp_path):
    good = tiny_table()
    write_table(good, tmp_path / "t.json.gz")
    assert read_table(tmp_path / "t.json.gz")["configs"] == good["configs"]
    bad = tiny_table()
    bad["configs"][0]["params"]["training.learning_rate"] = 3e-3
    with pytest.raises(TableError, match=r"configuration 0: training.learning_rate = 0.003 is not in its choices"):
        check_table(bad)
    bad = tiny_table()
    del bad["configs"][1]["params"]["adalora.target_modules"]
    with pytest.raises(TableError, match="configuration 1 has knobs"):
        check_table(bad)
    bad = tiny_table()
    bad["configs"].append(bad["configs"][0])
    with pytest.raises(TableError, match="repeats"):
        check_table(bad)
    bad = tiny_table()
    bad["configs"][2]["runs"]["5"] = bad["configs"][2]["runs"]["0"]
    with pytest.raises(TableError, match="seeds"):
        check_table(bad)
    with pytest.raises(TableError, match="format"):
        check_table({**good, "format": "other/1"})


def test_replay_command_writes_a_summary(tmp_path):
    write_table(tiny_table(), tmp_path / "tiny.json.gz")
    cmd = [sys.executable, str(REPO / "bench" / "replay_table.py"), str(tmp_path / "tiny.json.gz")]
    cmd += ["--replays", "4", "--arms", "default", "tpe+median", "--budgets", "2", "4", "--out", str(tmp_path / "o")]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert set(summary["by_budget"]) == {"2", "4"}
    assert set(summary["by_budget"]["4"]) == {"random", "default", "tpe+median"}
    assert (tmp_path / "o" / "anytime.png").stat().st_size > 0
    bad = subprocess.run([*cmd[:2], str(tmp_path / "tiny.json.gz"), "--arms", "tpe+bogus"], capture_output=True)
    assert bad.returncode != 0 and b"unknown arm 'tpe+bogus'" in bad.stderr


@pytest.mark.slow
def test_build_table_runs_every_configuration_on_every_seed_and_resumes(tmp_path):
    grid = study_dict(
        study={"name": "g", "n_trials": 2, "sampler": {"type": "grid", "seed": 0}, "pruner": {"type": "none"}},
        training={"max_steps": 8, "eval_every": 4, "learning_rate": {"choices": [1e-3, 1e-2]}},
        adalora={"target_modules": {"choices": [["query", "value"]]}},
    )
    path = write_study(tmp_path, grid)
    out = tmp_path / "g.json.gz"
    cmd = [sys.executable, str(REPO / "bench" / "build_table.py"), str(path), "--seeds", "0", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    table = read_table(out)
    assert len(table["configs"]) == 2 and table["seeds"] == [0, 1] and table["total_steps"] == 8
    for config in table["configs"]:
        assert set(config["runs"]) == {"0", "1"}
        r = config["runs"]["0"]
        assert r["state"] == "COMPLETE" and [p["step"] for p in r["curve"]] == [4, 8]
        assert r["steps"] == 8 and r["wall_s"] > 0 and r["rank_allocation"] and "accuracy" in r["test"]
    first = {c["params"]["training.learning_rate"]: c["runs"]["1"]["validation"] for c in table["configs"]}
    again = subprocess.run(cmd, check=True, capture_output=True, text=True)  # resumed: nothing left to run
    assert "on every seed" not in again.stdout
    assert {
        c["params"]["training.learning_rate"]: c["runs"]["1"]["validation"] for c in read_table(out)["configs"]
    } == first
    with gzip.open(out, "rt") as f:
        assert math.isclose(json.load(f)["cpu_hours"], table["cpu_hours"])
    import shutil

    shutil.rmtree(tmp_path / "work")  # another machine: only the committed table is there; it is not run again
    fresh = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert "on every seed" not in fresh.stdout and read_table(out)["configs"] == table["configs"]
    refs = [sys.executable, str(REPO / "bench" / "build_references.py"), str(out), "--modules", "query,value"]
    refs += ["--methods", "lora", "dora", "--rates", "1e-2"]
    subprocess.run(refs, check=True, capture_output=True, text=True, cwd=tmp_path)
    with gzip.open(tmp_path / "g.references.json.gz", "rt") as f:
        made = json.load(f)
    assert made["matrices"] == 4 and made["init_r"] == 4  # 2 layers x (query, value); the table's init_r
    assert sorted((r["method"], r["seed"]) for r in made["runs"]) == [
        ("dora", 0),
        ("dora", 1),
        ("lora", 0),
        ("lora", 1),
    ]
    for r in made["runs"]:
        assert r["state"] == "COMPLETE" and r["target_r"] == 2 and r["steps"] == 8 and "accuracy" in r["test"]
        assert [p["step"] for p in r["curve"]] == [4, 8]
    lora, dora = (next(r for r in made["runs"] if r["method"] == m and r["seed"] == 0) for m in ("lora", "dora"))
    assert lora["trainable_params"]["final"] < dora["trainable_params"]["final"]  # DoRA's magnitudes on top
    again = subprocess.run(refs, check=True, capture_output=True, text=True, cwd=tmp_path)  # resumed: nothing to run
    assert "seed=" not in again.stdout and "4 runs" in again.stdout


def test_a_warm_arm_asks_the_portfolio_first_fitted_into_the_table():
    table = Table(tiny_table())
    portfolio = [{"training.learning_rate": 0.05, "adalora.target_modules": ["b"]}, {"training.learning_rate": 5.0}]
    assert arms.fitted(table, portfolio) == [{"training.learning_rate": 0.05, "adalora.target_modules": "b"}]
    out = replay(table, arms.arm("warm-random", 4, 12, portfolio), seed=0, n_trials=3)
    first = out.queries[0]
    assert first.warm and first.params == {"training.learning_rate": 0.1, "adalora.target_modules": "b"}  # snapped
    assert not any(q.warm for q in out.queries[1:])


def test_the_portfolio_is_chosen_greedily_over_every_run():
    sys.path.insert(0, str(REPO / "bench"))
    import choose_portfolio

    picks = choose_portfolio.greedy([Table(tiny_table())], 2)
    # the best mean first; then nothing lowers the best regret of any run (0 and 0.04), so the next-best mean
    assert [dict(p) for p in picks] == [
        {"training.learning_rate": 1e-2, "adalora.target_modules": ("b",)},
        {"training.learning_rate": 1e-2, "adalora.target_modules": ("a",)},
    ]


TABLE_STUDIES = sorted((REPO / "bench" / "tables").glob("*.yaml"))


@pytest.mark.parametrize("path", TABLE_STUDIES, ids=[p.stem for p in TABLE_STUDIES])
def test_table_study_files_are_grids_that_start_with_their_command(path):
    from adalora_search.study.loader import load_spec

    spec = load_spec(path)
    assert spec.study.sampler.root.type == "grid" and spec.study.keep_top_k_adapters == 0
    assert path.read_text().splitlines()[0].startswith(f"# python bench/build_table.py bench/tables/{path.name}")


def test_knob_importance_and_where_the_good_configurations_lie():
    sys.path.insert(0, str(REPO / "bench"))
    import table_importance

    table = Table(tiny_table())
    study = table_importance.as_study(table)
    assert len(study.trials) == 6 and study.best_value == pytest.approx(0.90)
    got = table_importance.importances(study)
    assert set(got) == {"fanova", "ped_anova"} and set(got["fanova"]) == set(table.space)
    good = table_importance.where_good(table, top=0.2)  # the top 20 % of 6: the best one, (1e-2, "b")
    lr = {c["choice"]: c for c in good["training.learning_rate"]}
    assert lr[1e-2]["share_of_top"] == 1.0 and lr[1e-2]["share_of_all"] == pytest.approx(1 / 3)
    assert lr[1e-2]["best_mean"] == pytest.approx(0.90) and lr[1e-1]["best_mean"] == pytest.approx(0.50)

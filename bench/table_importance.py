"""Which of AdaLoRA's knobs matter, per table (issue #34, item 5): Optuna's own importance evaluators on the table.

Each configuration of the table becomes one completed trial of an in-memory Optuna study, valued at its true
validation metric (the mean over the table's seeds); fANOVA (``FanovaImportanceEvaluator``, random forest) and
PED-ANOVA (``PedAnovaImportanceEvaluator``: which knobs separate the top configurations from the rest) rank the
knobs. Then, per knob, where the good configurations lie: each choice's share among the top 10 % against its
share of the grid, and the best true mean with that choice.

    python bench/table_importance.py bench/tables/t1_bbc_news_minilm.json.gz [--out bench/results/importance]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables.replay import Table  # noqa: E402
from tables.table import read_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def as_study(table: Table) -> optuna.Study:
    """The table's configurations as completed trials (value: true validation mean over the seeds)."""
    study = optuna.create_study(direction="maximize" if table.maximize else "minimize")
    dists = {knob: CategoricalDistribution(choices) for knob, choices in table.space.items()}
    for config in table.data["configs"]:
        value = table.true(config["params"])
        if value is not None:
            study.add_trial(optuna.trial.create_trial(params=config["params"], distributions=dists, value=value))
    return study


def importances(study: optuna.Study, seed: int = 0) -> dict[str, dict[str, float]]:
    """fANOVA and PED-ANOVA importances of every knob (each sums to 1 over the knobs, or as the evaluator says)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings
        for name, evaluator in (
            ("fanova", FanovaImportanceEvaluator(seed=seed)),
            ("ped_anova", PedAnovaImportanceEvaluator()),
        ):
            out[name] = {k: float(v) for k, v in get_param_importances(study, evaluator=evaluator).items()}
    return out


def where_good(table: Table, top: float = 0.1) -> dict[str, list[dict]]:
    """Per knob and choice: its share of the top ``top`` fraction of configurations vs of all, and its best mean."""
    rows = sorted(
        ((table.true(c["params"]), c["params"]) for c in table.data["configs"] if table.true(c["params"]) is not None),
        key=lambda r: r[0],
        reverse=table.maximize,
    )
    best = rows[: max(1, round(top * len(rows)))]
    out = {}
    for knob, choices in table.space.items():
        out[knob] = [
            {
                "choice": choice,
                "share_of_top": sum(p[knob] == choice for _, p in best) / len(best),
                "share_of_all": sum(p[knob] == choice for _, p in rows) / len(rows),
                "best_mean": max((v for v, p in rows if p[knob] == choice), default=None)
                if table.maximize
                else min((v for v, p in rows if p[knob] == choice), default=None),
            }
            for choice in choices
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/importance")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = Table(read_table(args.table))
    study = as_study(table)
    result = {
        "table": table.data["name"],
        "configurations": len(study.trials),
        "grid": table.n_grid,
        "importance": importances(study),
        "where_good": where_good(table),
    }
    out = args.out or ROOT / "bench" / "results" / "importance"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{table.data['name']}.json").write_text(json.dumps(result, indent=1))
    print(f"{table.data['name']}: {len(study.trials)} of {table.n_grid} configurations")
    print("| knob | fANOVA | PED-ANOVA | choices: share of the top 10 % (of the grid), best mean |")
    print("|---|---|---|---|")
    for knob in sorted(table.space, key=lambda k: -result["importance"]["fanova"].get(k, 0)):
        cells = "; ".join(
            f"{c['choice']}: {100 * c['share_of_top']:.0f} % ({100 * c['share_of_all']:.0f} %), {c['best_mean']:.4f}"
            for c in result["where_good"][knob]
            if c["best_mean"] is not None
        )
        fanova, ped = result["importance"]["fanova"].get(knob, 0), result["importance"]["ped_anova"].get(knob, 0)
        print(f"| `{knob}` | {fanova:.3f} | {ped:.3f} | {cells} |")


if __name__ == "__main__":
    main()

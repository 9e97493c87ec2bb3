"""Choose the warm-start portfolio (``study.warm_start: portfolio``) on the benchmark tables (issue #34, item 6).

A scenario is one run of a table (table x training seed). A configuration's regret in a scenario is the
normalized regret of that run's final validation metric (``bench/tables/stats.py``: 0 = the table's best
mean, 1 = its worst mean; clipped at 0). Greedy: each pick is the configuration that most lowers the mean
over scenarios of the best regret among the picks so far (ties: the lower mean regret). Configurations are
matched across tables by their knob values, target modules by the kinds of matrix they name.

    python bench/choose_portfolio.py bench/tables/*.json.gz --k 4                # print the picks
    python bench/choose_portfolio.py bench/tables/*.json.gz --k 4 --write        # and write search/portfolio.py
    python bench/choose_portfolio.py bench/tables/*.json.gz --exclude t3_...     # leave one table out
"""

from __future__ import annotations

import argparse
import pprint
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables.replay import Table  # noqa: E402
from tables.table import read_table  # noqa: E402

from adalora_search.study.loader import parse_spec  # noqa: E402
from adalora_search.study.space import KNOBS, knob, searched_knobs  # noqa: E402
from adalora_search.train.module_kinds import module_type  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULES = "adalora.target_modules"


def match_key(params: dict[str, Any]) -> tuple:
    """A configuration's identity across tables: its knob values, target modules as their kinds of matrix."""
    return tuple(
        sorted(
            (k, tuple(sorted({module_type(m) for m in v.split(",")})) if k == MODULES else v) for k, v in params.items()
        )
    )


def scenarios(table: Table) -> dict[tuple, dict[str, float]]:
    """match key -> {"<table>:<seed>": regret of that seed's run}, for configurations complete on every seed."""
    best, worst = table.extremes()
    out = {}
    for config in table.data["configs"]:
        runs = config["runs"]
        if len(runs) < len(table.data["seeds"]) or any(r["state"] != "COMPLETE" for r in runs.values()):
            continue
        regrets = {}
        for seed, run in runs.items():
            value = run["validation"][table.metric]
            regret = (best - value) / (best - worst) if table.maximize else (value - best) / (worst - best)
            regrets[f"{table.data['name']}:{seed}"] = max(regret, 0.0)
        out[match_key(config["params"])] = regrets
    return out


def greedy(tables: list[Table], k: int) -> list[tuple]:
    """The k picks (match keys), in order."""
    per = [scenarios(t) for t in tables]
    shared = set.intersection(*(set(p) for p in per))
    if not shared:
        raise SystemExit("no configuration has complete runs in every table")
    rows = {key: {s: r for p in per for s, r in p[key].items()} for key in shared}
    names = sorted(next(iter(rows.values())))
    picks: list[tuple] = []
    for _ in range(min(k, len(rows))):

        def score(key: tuple) -> tuple[float, float]:
            cover = [min(rows[p][s] for p in [*picks, key]) for s in names]
            return sum(cover) / len(cover), sum(rows[key].values()) / len(names)

        picks.append(min((key for key in rows if key not in picks), key=score))
    return picks


def as_values(table: Table, key: tuple) -> dict[str, Any]:
    """A pick as a portfolio entry: every knob of the table's study file, the pick's searched ones, BERT's names."""
    spec = parse_spec(table.data["study_file"])
    params = next(c["params"] for c in table.data["configs"] if match_key(c["params"]) == key)
    searched = dict(searched_knobs(spec))
    values = {path: knob(spec, path) for path in KNOBS if path not in searched}
    values.update(params)
    values[MODULES] = params[MODULES].split(",")
    return {k: values[k] for k in KNOBS if k in values and not k.endswith(("weight_decay", "lora_dropout"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tables", type=Path, nargs="+")
    parser.add_argument("--k", type=int, default=4, help="portfolio size")
    parser.add_argument("--exclude", nargs="*", default=[], help="table names left out (leave-one-task-out)")
    parser.add_argument("--write", action="store_true", help="write adalora_search/search/portfolio.py")
    args = parser.parse_args()
    tables = [t for t in (Table(read_table(p)) for p in args.tables) if t.data["name"] not in args.exclude]
    picks = greedy(tables, args.k)
    values = [as_values(tables[0], key) for key in picks]
    names = [t.data["name"] + ("" if t.complete else " (partial)") for t in tables]
    for i, v in enumerate(values):
        means = [f"{t.data['name']} {t.true(_params(t, picks[i])):.4f}" for t in tables]
        print(f"#{i + 1}: {v}\n    true validation: {', '.join(means)}")
    if args.write:
        path = ROOT / "adalora_search" / "search" / "portfolio.py"
        head = path.read_text().split("TABLES = ", 1)[0]
        body = f"TABLES = {tuple(names)!r}  # what the picks were chosen on (bench/choose_portfolio.py)\n\n"
        body += (
            f"PORTFOLIO: tuple[dict[str, Any], ...] = {pprint.pformat(tuple(values), width=110, sort_dicts=False)}\n"
        )
        path.write_text(head + body)
        print(f"wrote {path}")


def _params(table: Table, key: tuple) -> dict[str, Any]:
    return next(c["params"] for c in table.data["configs"] if match_key(c["params"]) == key)


if __name__ == "__main__":
    main()

"""Replay search strategies against a table (issue #34): paired replays, regret, ranks, p-values, anytime curves.

    python bench/replay_table.py bench/tables/t1_bbc_news_minilm.json.gz --replays 100
    python bench/replay_table.py TABLE --replays 500 --arms random default gp tpe+sha tpe+median@eval_loss

Every arm is replayed with seeds 0..R-1 for the largest budget; a smaller budget is the same replay's first
trials. Writes ``<out>/summary.json`` (``bench/tables/stats.py``: per budget and arm), ``<out>/summary.md``
(the table printed here) and ``<out>/anytime.png`` (mean normalized regret against optimizer steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import arms as arms_mod  # noqa: E402
from tables import stats  # noqa: E402
from tables.replay import Table, replay  # noqa: E402
from tables.table import read_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARMS = ["random", "default", "tpe-mv", "tpe-group", "qmc", "tpe+median", "tpe+sha", "tpe+hyperband"]


def run(table: Table, names: list[str], replays: int, budgets: list[int], numeric: str) -> tuple[dict, dict]:
    """Replay every arm ``replays`` times; the replays per arm and the wall seconds each arm took."""
    rung, total = table.first_rung(), table.data["total_steps"]
    out, took = {}, {}
    for name in names:
        arm = arms_mod.arm(name, rung, total)
        start = time.perf_counter()
        out[name] = [replay(table, arm, seed, max(budgets), numeric) for seed in range(replays)]
        took[name] = time.perf_counter() - start
        print(f"[{name}] {replays} replays of {max(budgets)} trials in {took[name]:.1f} s", flush=True)
    return out, took


def markdown(summary: dict, table: Table) -> str:
    """One Markdown table per budget."""
    lines = []
    for n, rows in summary.items():
        lines += [
            f"\n{n} trials — normalized regret (0 = the table's best), true {table.metric} of the chosen "
            "configuration (mean over the table's seeds), random-to-grid, mean rank, Wilcoxon p\n",
            "| arm | regret | true validation | true test | random-to-grid | mean rank | p vs random | p vs default "
            "| steps |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for arm, r in sorted(rows.items(), key=lambda kv: kv[1]["regret"]["mean"]):
            lines.append(
                f"| {arm} | {r['regret']['mean']:.3f} ± {r['regret']['ci95']:.3f} "
                f"| {100 * r['true_validation']['mean']:.2f} | {100 * r['true_test']['mean']:.2f} "
                f"| {r.get('random_to_grid', float('nan')):.2f} | {r['mean_rank']:.2f} "
                f"| {_p(r.get('p_vs_random'))} | {_p(r.get('p_vs_default'))} | {r['steps']['mean']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def plot(table: Table, replays: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = table.data["total_steps"]
    longest = max(len(r.queries) for rs in replays.values() for r in rs)
    grid = list(range(total, total * longest + 1, max(total // 2, 1)))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, rs in replays.items():
        ax.plot([s / total for s in grid], stats.anytime(table, rs, grid), label=name)
    ax.set_xlabel("optimizer steps spent, in whole trials")
    ax.set_ylabel("mean normalized regret")
    ax.set_yscale("log")
    ax.set_title(f"{table.data['name']}: {len(next(iter(replays.values())))} replays per arm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS)
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--numeric", choices=["snap", "categorical"], default="snap")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/replay/<table name>")
    args = parser.parse_args()
    table = Table(read_table(args.table))
    for name in args.arms:
        arms_mod.arm(name, 1, 1)  # an unknown name fails before any replay
    if "random" not in args.arms:
        args.arms.insert(0, "random")
    out = args.out or ROOT / "bench" / "results" / "replay" / table.data["name"]
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{table.data['name']}: {len(table.runs)} of {table.n_grid} configurations"
        + ("" if table.complete else " (a partial table: a suggestion outside it gets the nearest configuration)"),
        flush=True,
    )
    replays, took = run(table, args.arms, args.replays, args.budgets, args.numeric)
    summary = stats.summarize(table, replays, args.budgets)
    meta = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "table": {k: table.data[k] for k in ("name", "commit", "built", "cpu_hours", "seeds")},
        "configurations": len(table.runs),
        "grid": table.n_grid,
        "replay_seconds": took,
        "substituted_share": {
            name: sum(r.substituted for r in rs) / max(sum(len(r.queries) for r in rs), 1)
            for name, rs in replays.items()
        },
        "by_budget": summary,
    }
    (out / "summary.json").write_text(json.dumps(meta, indent=1))
    text = markdown(summary, table)
    (out / "summary.md").write_text(text)
    plot(table, replays, out / "anytime.png")
    print(text + f"wrote {out}/summary.json, summary.md, anytime.png", flush=True)


if __name__ == "__main__":
    main()

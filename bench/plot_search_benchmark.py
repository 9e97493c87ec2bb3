"""Anytime curves of bench/search_benchmark.py: mean over seeds with a ±1 std band, one line per arm.

Panels: best validation so far (top) and the test score of that trial (bottom), against cumulative
optimizer steps (left) and wall time since the arm started (right). A seed's curve is a step
function of its finished trials; the mean is drawn where every seed of the arm has a completed trial,
up to the earliest end among its seeds (an arm whose trials were pruned ends sooner).

    python bench/plot_search_benchmark.py                                   # bench/results/search_benchmark
    python bench/plot_search_benchmark.py --results DIR --out DIR/anytime.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PANELS = [("steps", "optimizer steps (cumulative)"), ("finished_s", "wall time (s)")]
SCORES = [("best_validation", "best validation so far"), ("test_of_best", "test score of that trial")]


def load(results: Path) -> dict[str, list[dict]]:
    """Raw runs by arm, in the order of the summary (else by file name)."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(results.glob("*-seed*.json")):
        raw = json.loads(path.read_text())
        runs.setdefault(raw["arm"], []).append(raw)
    summary = results / "summary.json"
    if summary.exists():
        order = list(json.loads(summary.read_text())["arms"])
        runs = {arm: runs[arm] for arm in order if arm in runs} | runs
    if not runs:
        raise SystemExit(f"no <arm>-seed<seed>.json files in {results}: run bench/search_benchmark.py first")
    return runs


def on_grid(curve: list[dict], x: str, y: str, grid: np.ndarray) -> np.ndarray:
    """The step function y(x) of one run at each grid point (NaN before its first completed trial)."""
    xs = np.array([p[x] for p in curve], dtype=float)
    ys = np.array([np.nan if p[y] is None else p[y] for p in curve], dtype=float)
    at = np.searchsorted(xs, grid, side="right") - 1
    return np.where(at >= 0, ys[np.clip(at, 0, None)], np.nan)


def plot(runs: dict[str, list[dict]], out: Path, title: str) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (x, xlabel) in enumerate(PANELS):
        end = max(p[x] for raws in runs.values() for raw in raws for p in raw["curve"])
        grid = np.linspace(0, end, 400)
        for row, (y, ylabel) in enumerate(SCORES):
            ax = axes[row][col]
            for i, (arm, raws) in enumerate(runs.items()):
                values = np.stack([on_grid(raw["curve"], x, y, grid) for raw in raws])
                ended = min(raw["curve"][-1][x] for raw in raws)  # not drawn past an arm's last finished trial
                whole = ~np.isnan(values).any(axis=0) & (grid <= ended)
                mean, std = values[:, whole].mean(axis=0), values[:, whole].std(axis=0, ddof=min(1, len(raws) - 1))
                color = colors[i % len(colors)]
                ax.plot(grid[whole], mean, color=color, drawstyle="steps-post", label=f"{arm} (n={len(raws)})")
                ax.fill_between(grid[whole], mean - std, mean + std, color=color, alpha=0.15, step="post")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(ylabel)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "search_benchmark"))
    parser.add_argument("--out", default=None, help="PNG path (default: <results>/anytime.png)")
    args = parser.parse_args()
    results = Path(args.results)
    runs = load(results)
    first = next(iter(runs.values()))[0]
    seeds = sorted({raw["seed"] for raws in runs.values() for raw in raws})
    data, pt = first["data"], first["data"]["pt_per_example"]
    title = (
        f"{first['trials']} trials per arm, seeds {seeds}, mean ± 1 std over seeds; {data['validation']} "
        f"validation examples (1 = {pt['validation']} pt), {data.get('test')} test (1 = {pt.get('test')} pt)"
    )
    out = Path(args.out) if args.out else results / "anytime.png"
    plot(runs, out, title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""``adalora-search report``: tables (CSV + Markdown), PNG plots and one self-contained HTML page.

Reads only what is stored, so it works while the study is still running.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import optuna
import pandas as pd

from adalora_search.results import plots, tables


def write_report(study: optuna.Study, out: Path, top_k: int = 5) -> Path:
    """CSV and Markdown tables, PNG plots and one self-contained HTML page in ``out``; returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    metric = tables.metric_name(study)
    trials = tables.trials_table(study)
    allocations = tables.allocations_table(study)
    ranked = tables.ranked_trials(study)
    best = ranked[0] if ranked else None
    top = ranked[:top_k]
    frames = {
        "trials": trials,
        "allocations": allocations,
        "allocation_best": tables.pivot(allocations, [best.number]) if best else pd.DataFrame(),
        "allocation_topk_share": tables.pivot(allocations, [t.number for t in top], "rank_share"),
        "references": tables.references_table(study),
    }
    for name, frame in frames.items():
        frame.to_csv(out / f"{name}.csv")
    figures = _figures(study, trials, frames, best, top, metric, out)
    gains = _gains(trials, best, metric)
    (out / "report.md").write_text(_markdown(study, frames, figures, gains, metric))
    page = out / "report.html"
    page.write_text(_html(study, frames, figures, gains, metric))
    return page


def _figures(study, trials, frames, best, top, metric, out: Path) -> dict[str, Path]:
    figs: dict[str, Path] = {}
    if best is not None:
        figs["Final ranks of the best trial (layer x module type)"] = plots.heatmap(
            frames["allocation_best"], f"Trial {best.number}: final rank per matrix", out / "heatmap_best.png")
        figs[f"Mean rank share over the top {len(top)} trials"] = plots.heatmap(
            100 * frames["allocation_topk_share"], f"Top-{len(top)} trials: % of the budget",
            out / "heatmap_topk.png", fmt="{:.1f}", label="% of total rank")
        figs["Budget schedule of the top trials"] = plots.budget_curves(top, out / "budget_curves.png")
    if not trials.empty and f"final_{metric}" in trials:
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        figs["Metric vs trainable parameters"] = plots.metric_vs_params(trials, metric, maximize,
                                                                        out / "pareto.png")
    figs["Optimisation history"] = plots.history(study, metric, out / "history.png")
    figs["Intermediate values and trial pruning"] = plots.intermediate(study, metric, out / "intermediate.png")
    importance = plots.importances(study, out / "importances.png")
    if importance is not None:
        figs["Parameter importances"] = importance
    return figs


def _gains(trials: pd.DataFrame, best, metric: str) -> list[str]:
    """Sentences on the best trial's gain over each baseline, on test when stored, else validation."""
    if best is None or trials.empty:
        return ["No completed trial yet."]
    split = "test" if f"test_{metric}" in trials and pd.notna(trials.loc[best.number, f"test_{metric}"]) else "final"
    col = f"{split}_{metric}"
    label = "test" if split == "test" else "validation"
    best_value = trials.loc[best.number, col]
    out = [f"Best trial {best.number}: {label} {metric} {best_value:.4f}, "
           f"{100 * (trials.loc[best.number, 'params_share_final'] or 0):.2f}% of the parameters trainable."]
    for number, row in trials[(trials["baseline"] != "") & (trials["state"] == "COMPLETE")].iterrows():
        if number == best.number:
            out.append(f"The best trial is baseline '{row['baseline']}': the search found nothing better yet.")
        elif pd.notna(row.get(col)):
            out.append(f"Gain over baseline '{row['baseline']}' (trial {number}): "
                       f"{100 * (best_value - row[col]):+.2f} pt {label} {metric} ({row[col]:.4f}).")
    return out


def _markdown(study, frames, figures, gains, metric) -> str:
    parts = [f"# Study `{study.study_name}`\n", *[f"- {g}" for g in gains], ""]
    for title, path in figures.items():
        parts.append(f"## {title}\n\n![{title}]({path.name})\n")
    for name, frame in frames.items():
        if name != "allocations":
            parts.append(f"## {name}\n\n{tables.to_markdown(frame)}")
    parts.append("The long `allocations.csv` table lists every trial x module rank.\n")
    return "\n".join(parts)


def _html(study, frames, figures, gains, metric) -> str:
    imgs = "".join(f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode()}'>" for t, p in figures.items())
    tbls = "".join(f"<h2>{name}</h2>{frame.to_html(float_format=lambda v: f'{v:.4g}', na_rep='')}"
                   for name, frame in frames.items() if name != "allocations" and not frame.empty)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
    items = "".join(f"<li>{html.escape(g)}</li>" for g in gains)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study.study_name)}</title>"
            f"<style>{style}</style></head><body><h1>Study {html.escape(study.study_name)}</h1>"
            f"<p>Objective metric: {html.escape(metric)}. Rank = number of singular triplets AdaLoRA kept "
            f"in each adapted weight matrix.</p><ul>{items}</ul>{imgs}{tbls}</body></html>")

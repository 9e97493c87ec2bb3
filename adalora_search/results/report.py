"""``adalora-search report``: tables (CSV + Markdown), PNG plots and one self-contained HTML page.

Reads only what is stored, so it works while the study is still running. The page is the Jinja2
template ``templates/report.html`` (installed with the package), rendered with autoescaping.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import tempfile
from pathlib import Path

import jinja2
import optuna
import pandas as pd

from adalora_search import files
from adalora_search.errors import UserError
from adalora_search.results import plots, tables
from adalora_search.search import diagnostics
from adalora_search.search.record import ReferenceResult, StudyRecord, TrialRecord
from adalora_search.search.summary import trivial_lines, verdicts


def write_report(study: optuna.Study, out: Path, top_k: int = 5) -> Path:
    """CSV and Markdown tables, PNG plots and one self-contained HTML page in ``out``; returns the page.

    The whole report is written into a temporary folder beside ``out`` first, then its files are renamed
    into ``out``: a full disk leaves the previous report as it was, never a mix of old and new files.
    Raises ``UserError`` when ``out`` cannot be written (naming ``out``'s path).
    """
    created = not out.exists()
    files.make_dir(out)
    with files.writing(out):
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        page = _write(study, staging, top_k)
        for written in sorted(staging.iterdir()):
            os.replace(written, out / written.name)  # renames: no space needed, nothing half written
        return out / page.name
    except UserError as exc:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing partial left: not even the empty folder this call made
        raise UserError(str(exc).replace(str(staging), str(out))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(study: optuna.Study, out: Path, top_k: int) -> Path:
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
    eva = StudyRecord.of(study).references.get("eva")
    if eva is not None and eva.rank_allocation:  # EVA's ranks, moved between matrices, beside AdaLoRA's
        frames["allocation_eva"] = tables.allocation_grid(eva.rank_allocation)
        frames["allocation_eva_trial"] = tables.pivot(allocations, [eva.of_trial])  # the trial it was trained beside
    for name, frame in frames.items():
        files.write_text(out / f"{name}.csv", frame.to_csv())
    figures = _figures(study, trials, frames, best, top, metric, out)
    head = _gains(trials, best, metric, StudyRecord.of(study).references)
    stored = StudyRecord.of(study)
    verdict = (
        [*verdicts(TrialRecord.of(best), stored, metric), *trivial_lines(TrialRecord.of(best), stored, metric)]
        if best is not None
        else []
    )
    gains = [
        *head[:1],  # the best trial, then whether it beat each reference, on validation and test
        *(f"{line[0].upper()}{line[1:]}." for line in verdict),
        *head[1:],
        *budget_sentences(frames["allocation_best"], best),
        *eva_sentences(frames, StudyRecord.of(study).references.get("eva")),
        *diagnostics.study_notes(study),
    ]
    if (note := references_note(study)) is not None:
        gains.append(note.strip().strip("_"))
    if "Parameter importances" not in figures and best is not None:
        gains.append(
            f"Parameter importances are left out: fewer than {plots.MIN_TRIALS_FOR_IMPORTANCE} completed "
            "trials, or knobs Optuna's evaluator cannot tell apart (every one as important)."
        )
    files.write_text(out / "report.md", _markdown(study, frames, figures, gains, metric))
    page = out / "report.html"
    files.write_text(page, _html(study, frames, figures, gains, metric))
    return page


def eva_sentences(frames: dict[str, pd.DataFrame], eva: ReferenceResult | None) -> list[str]:
    """How far EVA's data-driven ranks agree with AdaLoRA's allocation of the trial EVA was trained beside (its
    budget; the share of budget both give the same layer x matrix type), when the study has an ``eva`` reference.
    """
    if eva is None or "allocation_eva" not in frames or frames["allocation_eva_trial"].empty:
        return []
    shared = tables.overlap(frames["allocation_eva_trial"], frames["allocation_eva"])
    eva_total = int(frames["allocation_eva"].fillna(0).to_numpy().sum())
    return [
        f"EVA's ranks (reference eva, {eva_total} in all, redistributed from its activations) and AdaLoRA's "
        f"allocation (trial {eva.of_trial}, whose budget it was trained at) give {100 * shared:.0f} % of their "
        "budgets to the same layer x matrix type."
    ]


def _figures(study, trials, frames, best, top, metric, out: Path) -> dict[str, Path]:
    figs: dict[str, Path] = {}
    if best is not None:
        figs["Final ranks of the best trial (layer x module)"] = plots.heatmap(
            frames["allocation_best"], f"Trial {best.number}: final rank per matrix", out / "heatmap_best.png"
        )
        figs[f"Mean rank share over the top {len(top)} trials"] = plots.heatmap(
            100 * frames["allocation_topk_share"],
            f"Top-{len(top)} trials: % of the budget",
            out / "heatmap_topk.png",
            fmt="{:.1f}",
            label="% of total rank",
        )
        if "allocation_eva" in frames:
            figs["EVA's ranks (reference eva, layer x module)"] = plots.heatmap(
                frames["allocation_eva"], "EVA: rank per matrix after its redistribution", out / "heatmap_eva.png"
            )
        figs["Budget schedule of the top trials"] = plots.budget_curves(top, metric, out / "budget_curves.png")
    if not trials.empty and f"final_{metric}" in trials:
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        figs["Metric vs trainable parameters"] = plots.metric_vs_params(trials, metric, maximize, out / "pareto.png")
    if (history := plots.history(study, metric, out / "history.png")) is not None:
        figs["Optimisation history"] = history
    reported = StudyRecord.of(study).intermediate_values or metric  # the pruning metric, negated if opposite
    figs["Intermediate values and trial pruning"] = plots.intermediate(study, reported, out / "intermediate.png")
    importance = plots.importances(study, out / "importances.png")
    if importance is not None:
        figs["Parameter importances"] = importance
    return figs


def _gains(trials: pd.DataFrame, best, metric: str, references: dict[str, ReferenceResult]) -> list[str]:
    """Sentences on the best trial's gain over each baseline, on test when stored, else validation."""
    if best is None or trials.empty:
        return ["No completed trial yet."]
    split = "test" if f"test_{metric}" in trials and pd.notna(trials.loc[best.number, f"test_{metric}"]) else "final"
    col = f"{split}_{metric}"
    label = "test" if split == "test" else "validation"
    best_value = trials.loc[best.number, col]
    out = [
        f"Best trial {best.number}: {label} {metric} {best_value:.4f}, "
        f"{100 * (trials.loc[best.number, 'params_share_final'] or 0):.2f}% of the parameters trainable."
    ]
    out += [f"WARNING (best trial {best.number}): {note}" for note in TrialRecord.of(best).warnings]
    out += [f"WARNING (reference {kind}): {note}" for kind, ref in references.items() for note in ref.warnings]
    for number, row in trials[(trials["baseline"] != "") & (trials["state"] == "COMPLETE")].iterrows():
        if number == best.number:
            out.append(f"The best trial is baseline '{row['baseline']}': the search found nothing better yet.")
        elif pd.notna(row.get(col)):
            out.append(
                f"Gain over baseline '{row['baseline']}' (trial {number}): "
                f"{100 * (best_value - row[col]):+.2f} pt {label} {metric} ({row[col]:.4f})."
            )
    warm = trials[(trials["warm_start"] != "") & (trials["state"] != "FAIL")] if "warm_start" in trials else trials
    if "warm_start" in trials and not warm.empty:
        which = "is one of them" if best.number in warm.index else "is not one of them: the search found better"
        out.append(
            f"Warm start (study.warm_start): trials {', '.join(map(str, warm.index))} ran first "
            f"({'; '.join(warm['warm_start'])}); the best trial {which}."
        )
    return out


def budget_sentences(table: pd.DataFrame, best) -> list[str]:
    """Two sentences on where the best trial's rank budget went: the modules and the layers holding the
    largest and smallest shares (``table``: layer x module ranks).
    """
    if best is None or table.empty or not table.to_numpy(dtype=float).any():
        return []
    total = float(table.sum().sum())
    by_module = (table.sum(axis=0) / total).sort_values(ascending=False)
    blocks = table[table.index >= 0]  # the pooler is no transformer block
    by_layer = (blocks.sum(axis=1) / total).sort_values(ascending=False)

    def shares(series: pd.Series) -> str:
        named = [(_layer(k) if series.index.name == "layer" else k, f"{100 * v:.0f} %") for k, v in series.items()]
        if len(named) <= 3:
            return ", ".join(f"{k} {v}" for k, v in named)
        return (
            f"{named[0][0]} ({named[0][1]}) and {named[1][0]} ({named[1][1]}) hold the most, "
            f"{named[-1][0]} the least ({named[-1][1]})"
        )

    pooler = 1 - float(by_layer.sum())
    return [
        f"Where the budget went: the best trial ({best.number}) kept {total:.0f} singular triplets; by matrix, "
        f"{shares(by_module)}.",
        f"By layer, {shares(by_layer)} (an even spread would give each of the {len(by_layer)} layers "
        f"{100 * (1 - pooler) / max(len(by_layer), 1):.0f} %)"
        + (f"; the pooler holds {100 * pooler:.0f} %." if pooler > 1e-9 else "."),
    ]


def _layer(index: int) -> str:
    return "the pooler" if index == -1 else f"layer {index}"


def references_note(study: optuna.Study) -> str | None:
    """What the report says of reference runs the study names but has not stored yet, or names none."""
    stored = StudyRecord.of(study)
    planned = stored.references_planned
    missing = [kind for kind in planned or [] if kind not in stored.references]
    if planned == [] or (planned is None and not stored.references):
        return (
            "_This study names no reference run (`study.references`: `lora`, `pissa`, `dora`, `eva`, `full`, "
            "`zero_shot`) to compare "
            "the best trial with._\n"
        )
    if missing:
        return (
            f"_Reference runs {', '.join(missing)} are not stored yet: `run` trains them once the study's last "
            "trial has finished._\n"
        )
    return None


def _markdown(study, frames, figures, gains, metric) -> str:
    parts = [f"# Study `{study.study_name}`\n", *[f"- {g}" for g in gains], ""]
    for title, path in figures.items():
        parts.append(f"## {title}\n\n![{title}]({path.name})\n")
    for name, frame in frames.items():
        if name == "references":
            note = references_note(study)
            parts.append(f"## {name}\n\n{'' if frame.empty else tables.to_markdown(frame)}{note or ''}")
        elif name != "allocations":
            parts.append(f"## {name}\n\n{tables.to_markdown(frame)}")
    parts.append("The long `allocations.csv` table lists every trial x module rank.\n")
    return "\n".join(parts)


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("adalora_search.results", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html")


def _html(study, frames, figures, gains, metric) -> str:
    """The page: every text escaped by the template; tables are pandas' HTML (cells escaped by pandas)."""
    tables = [
        (name, frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep=""))
        for name, frame in frames.items()
        if name != "allocations" and not frame.empty
    ]
    pngs = [(title, base64.b64encode(path.read_bytes()).decode()) for title, path in figures.items()]
    return _template().render(study_name=study.study_name, metric=metric, gains=gains, figures=pngs, tables=tables)

"""Stored study -> pandas tables (pure functions: the same storage always gives the same tables)."""

from __future__ import annotations

import re
from typing import Any

import optuna
import pandas as pd

from adalora_search.search import ranking
from adalora_search.search.record import StudyRecord, TrialRecord
from adalora_search.tasks import TASKS
from adalora_search.train.module_kinds import TYPE_ORDER, module_type


def module_name(name: str, stacks: bool = False) -> str:
    """The model's own name of the module within its block (``self_attn.q_proj``, ``attention.self.query``),
    the heatmaps' column; the name's last two parts outside the blocks (``pooler.dense``).

    ``stacks``: the model has an encoder and a decoder (T5, BART): the name starts with its stack, so that
    encoder self-attention, decoder self-attention and cross-attention (``encoder_attn``, ``EncDecAttention``)
    are columns of their own (``decoder encoder_attn.q_proj``).
    """
    match = re.search(r"(?:layer|layers|h|block|blocks)\.\d+\.(.+)$", name)
    own = match.group(1) if match else ".".join(name.split(".")[-2:])
    stack = re.search(r"(?:^|\.)(encoder|decoder)\.", name) if stacks else None
    return f"{stack.group(1)} {own}" if stack else own


def encoder_decoder(names: Any) -> bool:
    """Whether module names come from an encoder-decoder model: some under ``decoder.``, some under ``encoder.``."""
    return all(any(re.search(rf"(^|\.){stack}\.", n) for n in names) for stack in ("encoder", "decoder"))


def _column_order(column: str, kind: str | None) -> tuple[int, int, int, str]:
    """Heatmap column order: encoder before decoder; in a block self-attention, cross-attention, then the FFN."""
    rank = {k: i for i, k in enumerate(TYPE_ORDER)}
    stack = 1 if column.startswith("decoder ") else 0
    cross = 1 if re.search(r"encoder_attn|EncDecAttention|crossattention", column) else 0
    return stack, cross if rank.get(kind, len(rank)) <= rank["attn_out"] else 2, rank.get(kind, len(rank)), column


def layer_index(name: str) -> int:
    """Transformer block index parsed from the name; -1 for modules outside the blocks (pooler)."""
    match = re.search(r"(?:layer|layers|h|block|blocks)\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


def metric_name(study: optuna.Study) -> str:
    """The metric the report ranks and plots: the first objective's, else the task's main metric."""
    stored = StudyRecord.of(study)
    main = TASKS[stored.task].main_metric
    metric = stored.objective_metrics(main)[0]
    return main if metric == "trainable_params" else metric


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, params, metrics, budget, steps, time, failure."""
    rows = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


def _trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    r = TrialRecord.of(t)
    row: dict[str, Any] = {
        "trial": r.number,
        "state": r.state.name,
        "baseline": r.baseline or "",
        "warm_start": r.warm_start or "",
    }
    row.update({f"param:{k}": v for k, v in r.params.items()})
    for which in ("final", "best", "test"):
        for key, value in r.metrics.get(which, {}).items():
            if key not in ("step", "train_loss"):
                row[f"{which}_{key}"] = value
    params = r.trainable_params
    row.update(
        {
            "value": r.values[0] if r.values else None,
            "budget_initial": r.budget_curve[0][1] if r.budget_curve else None,
            "budget_final": r.total_rank if r.rank_allocation else None,
            "params_initial": params.get("initial"),
            "params_final": params.get("final"),
            "params_share_final": (params.get("final") or 0) / params["model_total"]
            if params.get("model_total")
            else None,
            "steps": r.steps,
            "total_steps": r.total_steps,
            "wall_s": r.timing.get("wall_s"),
            "failure": r.failure.get("message", "") if r.failure else "",
            "warnings": " | ".join(r.warnings),
        }
    )
    return row


def allocations_table(study: optuna.Study) -> pd.DataFrame:
    """Long table: trial x adapted module -> final rank, with layer index and module type."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows += _allocation_rows(t.number, t.state.name, TrialRecord.of(t).rank_allocation)
    return pd.DataFrame(rows, columns=ALLOCATION_COLUMNS)


ALLOCATION_COLUMNS = ["trial", "state", "module", "layer", "module_type", "module_name", "rank", "rank_share"]


def _allocation_rows(trial: int, state: str, ranks: dict[str, int]) -> list[dict[str, Any]]:
    total = sum(ranks.values()) or 1
    stacks = encoder_decoder(ranks)
    return [
        {
            "trial": trial,
            "state": state,
            "module": name,
            "layer": layer_index(name),
            "module_type": module_type(name),
            "module_name": module_name(name, stacks),
            "rank": rank,
            "rank_share": rank / total,
        }
        for name, rank in ranks.items()
    ]


def allocation_grid(ranks: dict[str, int]) -> pd.DataFrame:
    """One allocation (module -> rank, e.g. a reference's) as the layer x module table of ``pivot``."""
    return pivot(pd.DataFrame(_allocation_rows(0, "COMPLETE", ranks), columns=ALLOCATION_COLUMNS), [0])


def overlap(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """The share of budget two layer x module allocations give to the same cells: sum of the smaller share."""
    share_a, share_b = (_shares(frame) for frame in (a, b))
    share_a, share_b = share_a.align(share_b, fill_value=0.0)
    return float(share_a.where(share_a < share_b, share_b).to_numpy().sum())


def _shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Each cell's share of the frame's total (NaN: no rank, 0)."""
    filled = frame.fillna(0)
    return filled / max(float(filled.to_numpy().sum()), 1e-12)


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials with an allocation, best first (``ranking.ranked``)."""
    return [t for t in ranking.ranked(study) if TrialRecord.of(t).rank_allocation]


def pivot(allocations: pd.DataFrame, trials: list[int], value: str = "rank") -> pd.DataFrame:
    """Layer x module (the model's own names, in block order: query, key, value, attention output, cross-attention,
    FFN; an encoder's columns before a decoder's),
    averaged over those of ``trials`` that adapted each cell.

    A cell is ``value`` of that module (rank, or rank_share to compare budgets), summed over its modules
    when names repeat. NaN: no trial adapted it; 0: adapted, and every triplet pruned away.
    """
    subset = allocations[allocations["trial"].isin(trials)]
    if subset.empty:
        return pd.DataFrame()
    column = "module_name" if "module_name" in subset else "module_type"
    per_trial = subset.groupby(["trial", "layer", column])[value].sum()
    table = per_trial.groupby(["layer", column]).mean().unstack(column)
    kinds = dict(zip(subset[column], subset["module_type"]))
    ordered = sorted(table.columns, key=lambda c: _column_order(str(c), kinds.get(c)))
    rows = sorted(table.index, key=lambda layer: (layer < 0, layer))  # blocks in order, the pooler (-1) last
    return table.loc[rows, ordered]


def references_table(study: optuna.Study) -> pd.DataFrame:
    """One row per reference run: its metric on validation and test, trainable parameters."""
    metric = metric_name(study)
    rows = []
    for kind, ref in StudyRecord.of(study).references.items():
        rows.append(
            {
                "reference": kind,
                "of_trial": ref.of_trial,
                f"final_{metric}": ref.metric("final", metric),
                f"test_{metric}": ref.metric("test", metric),
                "params_final": ref.trainable_params.get("final"),
                "failure": ref.failure or "",
                "warnings": " | ".join(ref.warnings),
            }
        )
    columns = ["reference", "of_trial", f"final_{metric}", f"test_{metric}", "params_final", "failure", "warnings"]
    return pd.DataFrame(rows, columns=columns).set_index("reference")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table (``DataFrame.to_markdown``): a named index becomes the first column.

    Floats are written with ``floatfmt``, missing values (None) as empty cells; a ``|`` or line
    break inside a text cell is escaped so that the row keeps its columns.
    """
    if df.empty:
        return "_(empty)_\n"
    frame = df.reset_index() if df.index.name else df
    frame = frame.map(lambda v: v.replace("|", "\\|").replace("\n", " ") if isinstance(v, str) else v)
    return frame.to_markdown(index=False, floatfmt=floatfmt, missingval="") + "\n"

"""The export's model card (README.md): what was searched, what the trial scored, where its ranks went.

The same card is written at the top of the export and into ``adapter/`` and ``lora/`` (replacing
the empty template PEFT leaves beside a saved adapter), with Hugging Face metadata in front.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from huggingface_hub import ModelCard, ModelCardData

from adalora_search.results.manifest import ExportManifest
from adalora_search.search.record import StudyRecord, TrialRecord
from adalora_search.search.summary import trivial_lines, verdicts
from adalora_search.tasks import get_task
from adalora_search.train.assets import BUILT_MODELS, GGUF_MODELS, MODELS


def peft_class(task: str) -> str:
    """PEFT's Auto class that loads an adapter of ``task`` (``AutoPeftModelForSequenceClassification``...)."""
    return "AutoPeftModelFor" + get_task(task).auto_class.removeprefix("AutoModelFor")


def hub_id(name: str) -> str | None:
    """``name`` when it reads as a Hub id (not a packaged name, not a local directory), else None."""
    return None if name in {*MODELS, *GGUF_MODELS, *BUILT_MODELS} or Path(name).exists() else name


def _shown(name: str) -> str:
    """A model as the card shows it: a local path normalised (``studies/../assets/m`` -> ``assets/m``)."""
    return os.path.normpath(name) if ("/" in name or os.sep in name) and Path(name).exists() else name


def model_card(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, data: ExportManifest, out: Path, has_adapter: bool
) -> str:
    """The card of an export of ``trial`` (``data``: what rank_config.json holds; ``out``: the export's path)."""
    meta = ModelCardData(
        library_name="peft",
        base_model=hub_id(data.model),
        tags=["adalora", "lora", "peft", "adalora-search", data.task],
    )
    lines = [
        f"# {_shown(data.model)}: AdaLoRA rank allocation of study `{study.study_name}`, trial {trial.number}",
        "",
        f"Exported by `adalora-search export` from trial {trial.number} ({trial.state.name}"
        + (f", baseline `{data.baseline}`" if data.baseline else "")
        + f") of study "
        f"`{study.study_name}`: model `{_shown(data.model)}`, task `{data.task}`"
        + (
            f" with labels {', '.join(f'`{n}`' for n in data.label_names)} (ids in this order)"
            if data.label_names
            else ""
        )
        + ".",
        "",
    ]
    lines += _searched(study, trial) + _result(study, trial, data) + _allocation(data)
    lines += _files(data, out, has_adapter)
    return str(ModelCard(f"---\n{meta.to_yaml()}\n---\n" + "\n".join(lines) + "\n"))


def _searched(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> list[str]:
    out = [
        "## What was searched",
        "",
        f"{len(study.trials)} trials; this trial's values of the searched knobs:",
        "",
        "| knob | value | searched over |",
        "|---|---|---|",
    ]
    for name, value in sorted(trial.params.items()):
        out.append(f"| `{name}` | {_value(value)} | {_space(trial.distributions.get(name))} |")
    return [*out, ""]


def _space(dist: optuna.distributions.BaseDistribution | None) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return "choices " + ", ".join(_value(c) for c in dist.choices)
    if isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
        return f"{_value(dist.low)} to {_value(dist.high)}" + (" (log)" if dist.log else "")
    return "-"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _result(study: optuna.Study, trial: optuna.trial.FrozenTrial, data: ExportManifest) -> list[str]:
    objectives = StudyRecord.of(study).objectives
    out = ["## Result", ""]
    for objective, value in zip(objectives, trial.values or []):
        out.append(
            f"- objective: **{objective['metric']} = {value:.4f}** ({objective.get('direction')}, "
            "validation at the end of training)"
        )
    final, test = data.metrics.get("final", {}), data.metrics.get("test", {})
    names = [m for m in get_task(data.task).metrics if m in final]
    out += ["", "| metric | validation | test |", "|---|---|---|"]
    out += [f"| {m} | {final[m]:.4f} | {f'{test[m]:.4f}' if m in test else '-'} |" for m in names]
    out += [f"\n**Warning:** {note}" for note in TrialRecord.of(trial).warnings]
    metric = (
        objectives[0]["metric"] if objectives and objectives[0]["metric"] in final else get_task(data.task).main_metric
    )
    stored = StudyRecord.of(study)
    against = verdicts(TrialRecord.of(trial), stored, metric) + trivial_lines(TrialRecord.of(trial), stored, metric)
    if stored.trivial is not None and metric in stored.trivial.get("validation", {}):
        floor = stored.trivial
        test = floor.get("test", {}).get(metric)
        against.append(
            f"the trivial predictor ({floor['label']}) scores {metric} {floor['validation'][metric]:.4f} on validation"
            + (f", {test:.4f} on test" if test is not None else "")
        )
    if against:  # whether this trial beat each reference run of the study, said before anything else is read
        out += ["", "Against the study's reference runs:", ""] + [
            f"- {line.replace('best trial', 'this trial')}" for line in against
        ]
    params = data.trainable_params
    if params:
        out += [
            "",
            f"Trainable parameters: {params.get('initial', 0):,} at the start, {params.get('final', 0):,} "
            f"after rank pruning, of {params.get('model_total', 0):,} in the model.",
        ]
    return [*out, ""]


def _allocation(data: ExportManifest) -> list[str]:
    ranks = data.rank_allocation
    out = [
        "## Final rank allocation",
        "",
        f"init_r {data.init_r} per module at the start, target_r {data.target_r} on average at the end: "
        f"total rank {sum(ranks.values())} over {len(ranks)} modules "
        f"({sum(1 for r in ranks.values() if r == 0)} pruned to rank 0).",
        "",
        "| module | rank |",
        "|---|---|",
    ]
    out += [f"| `{name}` | {rank} |" for name, rank in ranks.items()]
    return [*out, ""]


def _files(data: ExportManifest, out: Path, has_adapter: bool) -> list[str]:
    lr = data.lora_learning_rate
    lines = [
        "## Files and use",
        "",
        f"- base model: `{data.base_model_name_or_path}` (`base_model_name_or_path` of every config here)",
    ]
    if has_adapter:
        lines += [
            "- `adapter/`: the trained AdaLoRA adapter (and head); it loads with no other argument:",
            "",
            "```python",
            f"from peft import {peft_class(data.task)}",
            "",
            f"model = {peft_class(data.task)}.from_pretrained({str(out / 'adapter')!r})",
            "```",
            "",
            "  After moving or copying this folder, `adalora-search export --relocate NEW_DIR` points its configs at "
            "the new place; or, with no tool at all, load the base yourself and put the adapter on it:",
            "",
            "```python",
            "from peft import PeftModel",
            f"from transformers import {get_task(data.task).auto_class}",
            "",
            f"base = {get_task(data.task).auto_class}.from_pretrained(BASE_MODEL_DIR_OR_ID)  # the base model above",
            "model = PeftModel.from_pretrained(base, ADAPTER_DIR)  # this folder's adapter/",
            "```",
            "",
            "  `model.generate(...)` and `model(**inputs)` without labels work as they are. Two PEFT quirks: its "
            "AdaLoRA model loaded for inference fails when labels are passed (it adds the training-only orthogonal "
            "regularizer), and `PeftModelForQuestionAnswering` does not pass `token_type_ids` on; "
            "`model.get_base_model()(**inputs)` runs the base with the adapter in place, as it was evaluated.",
            "",
        ]
    lines += [
        "- `lora/`: fixed-rank LoRA with the final ranks and AdaLoRA's per-direction scale "
        "(`adalora-search retrain EXPORT_DIR` trains it); `adalora/`: AdaLoRA with the trial's settings",
        f"- LoRA learning rate: {_value(lr.value) if lr.value else '-'} ({lr.source})",
        "- `rank_config.json` / `.yaml`: the trial, its metrics, allocation and full config",
    ]
    return lines

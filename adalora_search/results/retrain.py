"""``adalora-search retrain EXPORT_DIR``: train the exported fixed-rank LoRA, compare with AdaLoRA.

The learning rate: plain LoRA often diverges at the rate AdaLoRA did well with, so it is chosen on
validation (the task's main metric), as the study's ``lora`` reference chooses its own:

- ``--learning-rate`` (repeatable): those rates;
- else the export's recommendation (``rank_config.json`` ``lora_learning_rate``) when the study's
  ``lora`` reference chose it from several rates on the same data: that rate only;
- else ``LORA_LEARNING_RATES``, with a recommended rate (a reference that tried one) tried first.

A kept run at chance level (the task's ``chance_note``) is flagged with a WARNING line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adalora_search.results.manifest import ExportManifest, LoraLearningRate, read_manifest
from adalora_search.search.record import ReferenceResult
from adalora_search.study.space import LoraKnobs, TrialConfig
from adalora_search.study.spec import LORA_LEARNING_RATES
from adalora_search.tasks import Task, get_task
from adalora_search.train import sources


def learning_rates(rec: LoraLearningRate, given: list[float] | None) -> tuple[list[float], str]:
    """The rates to train for an export whose ``rank_config`` recommends ``rec``, and where they come from."""
    if given:
        return list(given), "given with --learning-rate"
    value = rec.value
    if value and len(rec.tried) > 1:
        return [value], f"{rec.source}, chosen on validation from {rec.tried}"
    rates = [value, *(r for r in LORA_LEARNING_RATES if r != value)] if value else list(LORA_LEARNING_RATES)
    return rates, "the best on validation of " + ", ".join(f"{r:g}" for r in rates)


@dataclass(frozen=True)
class RetrainResult:
    """What ``retrain`` trained: the export's manifest, the kept LoRA run (``tried``: every rate) and ``lines``,
    the comparison the command line prints.
    """

    manifest: ExportManifest
    lora: ReferenceResult
    lines: list[str]


def retrain(export_dir: Path, given: list[float] | None = None) -> RetrainResult:
    """Train the exported fixed-rank LoRA of ``export_dir`` and compare it with the AdaLoRA trial.

    ``given``: learning rates to choose from (``--learning-rate``); default see the module docstring.

    Raises:
        UserError: ``export_dir`` holds no export.
    """
    data = read_manifest(export_dir, "EXPORT_DIR")
    # the training stack is imported once the export is known to be there: a wrong folder is said at once
    from adalora_search.results.export import lora_patterns
    from adalora_search.results.references import pick_best, train_reference
    from adalora_search.train.data import load_tokenized
    from adalora_search.train.modeling import load_tokenizer

    cfg = TrialConfig.model_validate(data.config)
    ranks, alphas = lora_patterns(data.rank_allocation, cfg.adalora.lora_alpha, cfg.adalora.init_r)
    cfg = cfg.model_copy(update={"method": "lora", "lora": LoraKnobs(rank_pattern=ranks, alpha_pattern=alphas)})
    task = get_task(cfg.model.task)
    tokens = load_tokenized(cfg.data, load_tokenizer(cfg.model), task)
    rates, source = learning_rates(data.lora_learning_rate, given)
    results = []
    for lr in rates:
        print(f"[retrain] fixed-rank LoRA, learning rate {lr:g}")
        training = cfg.training.model_copy(update={"learning_rate": lr})
        results.append(train_reference(cfg.model_copy(update={"training": training}), tokens))
    best = pick_best(results, task)
    lines = _table(data, best, task)
    lines.append(f"learning rate {best.learning_rate:g}: {source}")
    if len(results) > 1:
        lines.append(
            f"learning rates tried (validation {task.main_metric}): "
            + ", ".join(
                f"{t.learning_rate:g} -> " + (f"{t.validation:.4f}" if t.validation is not None else "failed")
                for t in best.tried
            )
        )
    if data.data_content not in (None, sources.content_identity(cfg.data.source)):
        lines.append(
            "WARNING: the data files changed since the study ran (their content differs from what the "
            "trial trained on): the trial's figures above are not comparable with this run"
        )
    note = best.warnings[0] if best.warnings else None  # train_reference's chance_note
    if note or best.failure:
        lines.append(
            f"WARNING: the exported LoRA at learning rate {best.learning_rate:g}: "
            f"{note or best.failure}; try other rates with --learning-rate"
        )
    return RetrainResult(data, best, lines)


def _table(data: ExportManifest, best: ReferenceResult, task: Task) -> list[str]:
    """The AdaLoRA trial and the kept LoRA run, one line per metric."""
    lines = [f"{'run':40s} {'metric':12s} {'validation':>10s} {'test':>10s} {'trainable':>10s}"]
    for label, v, t, n in (
        (
            f"AdaLoRA trial {data.trial}",
            data.metrics.get("final", {}),
            data.metrics.get("test", {}),
            data.trainable_params.get("final"),
        ),
        (
            f"fixed-rank LoRA (exported), lr {best.learning_rate:.2g}",
            best.metrics.get("final", {}),
            best.metrics.get("test", {}),
            best.trainable_params.get("final"),
        ),
    ):
        lines += [
            f"{label:40s} {m:12s} {v[m]:10.4f} {_cell(t.get(m)):>10s} {n or 0:10d}" for m in task.metrics if m in v
        ]
    return lines


def _cell(value: float | None) -> str:
    """A test score, or ``-`` for a study without a test split."""
    return "-" if value is None else f"{value:.4f}"

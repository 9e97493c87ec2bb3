"""``adalora-search export``: a trial's final rank allocation as configs PEFT can train with.

Every config names a base model that loads as it is (``base_model``): ``adapter/`` loads with
PEFT's ``AutoPeftModelFor...`` and no other argument, with the task's labels in its config.

Fixed-rank LoRA reproducing AdaLoRA's scaling: AdaLoRA scales each triplet by
``lora_alpha / init_r`` (PEFT's SVDLinear divides by ``ranknum`` = init_r, which rank pruning
never changes); LoRA scales by ``alpha / r``. So module m with final rank r_m gets
``alpha_pattern[m] = lora_alpha * r_m / init_r`` and the per-direction scale is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import optuna
import yaml

from adalora_search import files
from adalora_search.errors import UserError
from adalora_search.results.manifest import MANIFEST_FILE, ExportManifest, LoraLearningRate
from adalora_search.results.model_card import model_card
from adalora_search.search import artifacts, ranking
from adalora_search.search.record import StudyRecord, TrialRecord
from adalora_search.study.space import TrialConfig
from adalora_search.study.spec import LORA_LEARNING_RATES
from adalora_search.tasks import get_task
from adalora_search.train import modeling
from adalora_search.train.assets import resolve_model
from adalora_search.train.data import load_tokenized

_log = logging.getLogger(__name__)


def lora_patterns(ranks: dict[str, int], lora_alpha: float, init_r: int) -> tuple[dict[str, int], dict[str, float]]:
    """rank_pattern and alpha_pattern of the equivalent fixed-rank LoRA (rank-0 modules left out)."""
    kept = {name: r for name, r in sorted(ranks.items()) if r > 0}
    return kept, {name: lora_alpha * r / init_r for name, r in kept.items()}


def pareto_pick(study: optuna.Study, pick: str) -> optuna.trial.FrozenTrial | None:
    """A named trial of a multi-objective study's Pareto front: best ``metric`` or fewest ``params``."""
    front = ranking.pareto_front(study)
    if not front:
        return None
    if pick == "params":
        return min(front, key=lambda t: (TrialRecord.of(t).trainable_params.get("final", 0), t.number))
    return front[0]  # ranking order: the front's best first objective


def pick_trial(study: optuna.Study, number: int | None, pick: str = "metric") -> optuna.trial.FrozenTrial:
    """Trial ``number``, or the best one (``--pick`` on a Pareto front); ``UserError`` if it has no allocation."""
    if number is None:
        trial = pareto_pick(study, pick) if len(study.directions) > 1 else ranking.best(study)
        if trial is None:
            raise UserError(f"study {study.study_name!r} has no completed trial to export yet")
    else:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not found:
            raise UserError(f"--trial = {number}: no such trial in study {study.study_name!r}")
        trial = found[0]
    record = TrialRecord.of(trial)
    for note in record.warnings:
        _log.warning("trial %d: WARNING: %s", trial.number, note)
    if record.state != optuna.trial.TrialState.COMPLETE:
        _log.warning(
            "trial %d is %s at step %s of %s: its allocation is where rank pruning had got to, not "
            "AdaLoRA's final one (rank_config.json records this)",
            trial.number,
            trial.state.name,
            record.steps,
            record.total_steps,
        )
    if not record.rank_allocation or record.config is None:
        raise UserError(
            f"--trial = {trial.number}: the trial ({trial.state.name}) stored no rank allocation "
            "and config; pick another trial with --trial"
        )
    return trial


def rank_config(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    label_names: list[str] | None = None,
    base_model: str | None = None,
) -> ExportManifest:
    """What ``rank_config.yaml/.json`` records: the trial, its metrics, its allocation and its full config.

    Also the task's label names in id order, the base model the exported configs point to and the
    LoRA learning rate this study recommends (``lora_learning_rate``).
    """
    record = TrialRecord.of(trial)
    cfg = TrialConfig.model_validate(record.config)
    a = cfg.adalora
    return ExportManifest(
        study=study.study_name,
        trial=trial.number,
        state=trial.state.name,
        baseline=record.baseline,
        values=trial.values,
        metrics=record.metrics,
        model=cfg.model.name_or_path,
        task=cfg.model.task,
        label_names=label_names,
        base_model_name_or_path=base_model,
        target_modules=a.target_modules,
        init_r=a.init_r,
        target_r=a.target_r,
        lora_alpha=a.lora_alpha,
        rank_allocation=record.rank_allocation,
        lora_learning_rate=lora_learning_rate(study),
        trainable_params=record.trainable_params,
        total_steps=record.total_steps,
        params=trial.params,
        config=cfg.model_dump(mode="json"),
        complete=trial.state == optuna.trial.TrialState.COMPLETE,
        steps_trained=record.steps,
        data_content=StudyRecord.of(study).fingerprint_sections.get("data", {}).get("content"),
        adapter_failure=record.adapter_failure,
    )


def lora_learning_rate(study: optuna.Study) -> LoraLearningRate:
    """The learning rate recommended for the exported LoRA: the study's ``lora`` reference's, else none.

    ``tried`` lists the rates the reference chose from on validation.
    """
    ref = StudyRecord.of(study).references.get("lora")
    if ref is not None and ref.trained and ref.learning_rate:
        tried = [t.learning_rate for t in ref.tried if t.learning_rate is not None] or [ref.learning_rate]
        return LoraLearningRate(
            value=ref.learning_rate, source="reference lora run of this study", of_trial=ref.of_trial, tried=tried
        )
    return LoraLearningRate(source=f"not searched: retrain chooses from {list(LORA_LEARNING_RATES)}")


def export_trial(
    study: optuna.Study, out: Path, number: int | None = None, force: bool = False, pick: str = "metric"
) -> Path:
    """Write rank_config.yaml/.json, README.md, base/, lora/, adalora/ (and adapter/ when kept), atomically.

    Raises:
        UserError: no such trial, ``out`` exists without ``force`` or cannot be written, or the
            study's model or data cannot be loaded.
    """
    trial = pick_trial(study, number, pick)
    target = out.resolve()
    _check_replaceable(out, target, force)
    with files.writing(out):  # a full disk, a read-only folder...: exit 2 naming --out, nothing left behind
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            _write(study, trial, tmp, target)
            files.default_modes(tmp)
            _swap(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_replaceable(out: Path, target: Path, force: bool) -> None:
    """``--out`` may be new, or (with ``--force``) an earlier export; never a file, another folder, or a folder
    holding the working directory.

    Raises:
        UserError: naming ``--out`` and what is there.
    """
    if not target.exists():
        return
    if not force:
        raise UserError(f"--out = {str(out)!r} already exists; pass --force to replace it")
    if Path.cwd() == target or target in Path.cwd().parents:
        raise UserError(f"--out = {str(out)!r} holds the working directory; name a folder of its own for the export")
    if not (target.is_dir() and (target / "rank_config.json").is_file()):
        what = "a file" if not target.is_dir() else "a folder that is not an export (it has no rank_config.json)"
        raise UserError(
            f"--out = {str(out)!r} is {what}; --force replaces only an earlier export, so choose another path"
        )


def base_model(cfg: TrialConfig, label_names: list[str] | None, tmp: Path, final: Path) -> str:
    """The base model every exported config names (``base_model_name_or_path``), loadable as it is.

    The model as the study named it (a packaged name resolved to its local directory, a local
    directory made absolute, a Hub id as given) when the task's Auto class loads it as the trial
    built it; otherwise (the task's labels and head size, ``config_overrides``, ``init: random``)
    the trial's base model, saved with its tokenizer to ``tmp`` (``final`` once the export is in place).
    """
    spec = cfg.model
    if get_task(spec.task).config_kwargs(label_names) or spec.config_overrides or spec.init == "random":
        modeling.build_base(spec, label_names, cfg.training.seed).save_pretrained(str(tmp))
        modeling.load_tokenizer(spec).save_pretrained(str(tmp))
        return str(final)
    named = resolve_model(spec.name_or_path)
    return str(Path(named).resolve()) if Path(named).is_dir() else named


def _write(study: optuna.Study, trial: optuna.trial.FrozenTrial, tmp: Path, final: Path) -> None:
    record = TrialRecord.of(trial)
    cfg = TrialConfig.model_validate(record.config)
    task = get_task(cfg.model.task)
    labels = (
        record.label_names
        if record.has_label_names  # as trained, even if the data changed since
        else load_tokenized(cfg.data, modeling.load_tokenizer(cfg.model), task).label_names
    )
    base = base_model(cfg, labels, tmp / "base", final / "base")
    manifest = rank_config(study, trial, labels, base)
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.as_json(), indent=2))
    (tmp / "rank_config.yaml").write_text(yaml.safe_dump(manifest.as_json(), sort_keys=False))
    ranks, alphas = lora_patterns(manifest.rank_allocation, cfg.adalora.lora_alpha, cfg.adalora.init_r)
    fan = modeling.conv1d_targets(modeling.meta_model(cfg.model)[0], cfg.adalora.target_modules)
    lora = modeling.lora_config(ranks, alphas, cfg.adalora, cfg.model.task, fan)
    adalora = modeling.adalora_config(cfg.adalora, manifest.total_steps, cfg.model.task, fan)
    for name, config in (("lora", lora), ("adalora", adalora)):
        config.base_model_name_or_path = base
        config.save_pretrained(str(tmp / name))
    has_adapter = artifacts.restore_adapter(study, trial, tmp / "adapter")  # from the study's artifact store
    if has_adapter:
        path = tmp / "adapter" / "adapter_config.json"
        stored = json.loads(path.read_text())  # the training machine's path -> the exported base
        path.write_text(
            json.dumps(
                {**stored, "base_model_name_or_path": base, "task_type": task.peft_task_type}, indent=2, sort_keys=True
            )
        )
        modeling.load_tokenizer(cfg.model).save_pretrained(str(tmp / "adapter"))  # beside it, chat template too
    card = model_card(study, trial, manifest, final, has_adapter)
    for directory in (tmp, *([tmp / "adapter"] if has_adapter else [])):
        (directory / "README.md").write_text(card)
    for directory, how in ((tmp / "lora", LORA_USE), (tmp / "adalora", ADALORA_USE)):
        note = CONFIG_ONLY.format(name=directory.name, how=how)
        end = card.index("\n---\n", 3) + 5 if card.startswith("---") else 0  # after the Hub's metadata block
        (directory / "README.md").write_text(card[:end] + note + card[end:])


CONFIG_ONLY = """# `{name}/`: a configuration to train with, not a trained adapter

This folder holds `adapter_config.json` only, no weights: loading it with PEFT's `AutoPeftModel...`
fails. {how} The trained adapter of the trial, when the study kept it, is `adapter/`.

"""
LORA_USE = (
    "It is fixed-rank LoRA with the trial's final ranks and AdaLoRA's per-direction scale: "
    "`adalora-search retrain EXPORT_DIR` trains it (choosing the learning rate on validation), or PEFT: "
    '`get_peft_model(base_model, LoraConfig.from_pretrained("lora"))`.'
)
ADALORA_USE = (
    "It is AdaLoRA with the trial's settings (budget, schedule, total steps): train it with PEFT, "
    '`get_peft_model(base_model, AdaLoraConfig.from_pretrained("adalora"))`, calling '
    "`model.base_model.update_and_allocate(step)` after each optimizer step, as PEFT's AdaLoRA docs say."
)


def _swap(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` so a reader sees the old export or the new one, never half of one."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)

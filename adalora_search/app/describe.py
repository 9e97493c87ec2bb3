"""The human summary ``validate`` prints: each knob, the schedule, the budget at start and end."""

from __future__ import annotations

from collections import Counter

from adalora_search.study.distributions import corners, describe
from adalora_search.study.samplers import random_search_note
from adalora_search.study.space import KNOBS, knob, optimizer_steps
from adalora_search.study.spec import StudySpec
from adalora_search.train import modeling
from adalora_search.train.data import TokenizedData


def summary(spec: StudySpec, linears: dict[str, tuple[int, int]] | None, data: TokenizedData | None) -> list[str]:
    """Lines describing the study: objective, knobs, steps, data sizes, budget per target-module choice."""
    s = spec.study
    n_train = len(data.splits["train"]) if data is not None else None
    lines = [
        f"study {s.name!r}: objective " + ", ".join(f"{o.resolved_direction} {o.metric}" for o in s.objectives),
        f"  sampler {s.sampler.root.type}, trial pruner {s.pruner.root.type}, "
        f"n_trials {s.n_trials}" + (f", timeout {s.timeout:g} s" if s.timeout else ""),
        f"  model {spec.model.name_or_path} ({spec.model.init}), task {spec.model.task}",
        "knobs:",
    ]
    lines += [f"  {path:28s} {describe(knob(spec, path))}" for path in KNOBS]
    steps = total_steps(spec, n_train)
    if steps is not None:
        unit = "training windows" if data is not None and data.examples else "training rows"  # QA reads windows
        lines.append(f"total optimizer steps per trial: {steps}" + (f" ({n_train} {unit})" if n_train else ""))
    if data is not None:
        lines += _data(data)
    if linears is not None:
        lines += _budget(spec, linears)
    lines += [f"baselines: {', '.join(b.name for b in spec.baselines) or 'none'}"]
    if note := random_search_note(s.sampler, s.n_trials, len(spec.baselines)):
        lines.append(f"NOTE: {note}")
    return lines


def _data(data: TokenizedData) -> list[str]:
    if data.examples:  # rows read as several windows (question answering)
        sizes = ", ".join(
            f"{name} {data.examples[name]} rows ({len(split)} windows)" for name, split in data.splits.items()
        )
        lines = [f"data: {sizes}"]
    else:
        lines = [f"data: {', '.join(f'{name} {len(split)}' for name, split in data.splits.items())} rows"]
    lines += [f"  {note}" for note in data.notes()]
    labels = data.splits["train"].columns["labels"]
    if data.label_names is not None and labels and not isinstance(labels[0], list):
        counts = Counter(labels)
        lines.append(
            f"  {len(data.label_names)} classes in train: "
            + ", ".join(f"{name} {counts[i]}" for i, name in enumerate(data.label_names[:30]))
        )
    elif data.label_names is not None:
        lines.append(f"  {len(data.label_names)} tags: {', '.join(data.label_names[:30])}")
    return lines


def total_steps(spec: StudySpec, n_train: int | None) -> int | None:
    """Optimizer steps per trial (as the engine computes them), when the training set size is known."""
    if spec.training.max_steps is None and n_train is None:
        return None
    return optimizer_steps(spec.training, n_train or 0)


def _budget(spec: StudySpec, linears: dict[str, tuple[int, int]]) -> list[str]:
    """Budget b(0) = init_r x matrices and b(T) = target_r x matrices, over the search space corners."""
    out = ["budget (total rank b(0) -> b(T), adapter parameters at start -> end):"]
    for targets in corners(spec.adalora.target_modules):
        mods = modeling.matching(linears, list(targets))
        width = sum(i + o + 1 for i, o in mods.values())
        init_rs, target_rs = corners(spec.adalora.init_r), corners(spec.adalora.target_r)
        b0 = _span(min(init_rs) * len(mods), max(init_rs) * len(mods))
        bt = _span(min(target_rs) * len(mods), max(target_rs) * len(mods))
        p0 = _span(min(init_rs) * width, max(init_rs) * width)
        pt = _span(min(target_rs) * width, max(target_rs) * width)
        out.append(f"  {','.join(targets)}: {len(mods)} matrices, b(0) {b0} -> b(T) {bt}; params {p0} -> {pt}")
    return out


def _span(low: int, high: int) -> str:
    """``1,560`` for a fixed value, ``1,560..3,120`` for a searched one."""
    return f"{low:,}" if low == high else f"{low:,}..{high:,}"

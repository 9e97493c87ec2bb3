"""The trial's method (``TrialConfig.method``): how the base model is adapted and what the engine does
around it, in one table instead of branches on the method's name.

``adalora``: PEFT's AdaLoRA (rank pruning by ``update_and_allocate``, the orthogonal regularizer);
``lora``: PEFT's fixed-rank LoRA (a reference, or ``retrain`` of an export); ``full``: every weight
trained; ``none``: the base model as it is, evaluated only (the zero-shot reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import get_peft_model

from adalora_search.errors import UserError
from adalora_search.study.space import TrialConfig
from adalora_search.train import allocator, memory, modeling

Adapt = Callable[[torch.nn.Module, TrialConfig, int], torch.nn.Module]


def _adalora(base: torch.nn.Module, cfg: TrialConfig, total_steps: int) -> torch.nn.Module:
    fan = modeling.conv1d_targets(base, cfg.adalora.target_modules)
    model = get_peft_model(base, modeling.adalora_config(cfg.adalora, total_steps, cfg.model.task, fan))
    allocator.install(model)  # same allocation as PEFT's, batched (see allocator.py)
    return model


def _lora(base: torch.nn.Module, cfg: TrialConfig, total_steps: int) -> torch.nn.Module:
    assert cfg.lora is not None, "a lora run names its ranks (TrialConfig.lora)"
    fan = modeling.conv1d_targets(base, list(cfg.lora.rank_pattern))
    return get_peft_model(
        base, modeling.lora_config(cfg.lora.rank_pattern, cfg.lora.alpha_pattern, cfg.adalora, cfg.model.task, fan)
    )


@dataclass(frozen=True)
class Method:
    """What a method means for the model and the engine.

    ``adapt``: PEFT's wrapping of the base (None: the base itself is trained or evaluated);
    ``trains``: it has an optimizer step at all; ``trains_base``: every base weight is trainable;
    ``rank_pruning``: AdaLoRA's allocation (``RankBook``), regularizer and warm-up until ``t_init``.
    """

    adapt: Adapt | None
    trains: bool
    trains_base: bool = False
    rank_pruning: bool = False


METHODS: dict[str, Method] = {
    "adalora": Method(adapt=_adalora, trains=True, rank_pruning=True),
    "lora": Method(adapt=_lora, trains=True),
    "full": Method(adapt=None, trains=True, trains_base=True),
    "none": Method(adapt=None, trains=False),
}


def wrap(base: torch.nn.Module, cfg: TrialConfig, total_steps: int) -> torch.nn.Module:
    """Apply the trial's method to ``base``; returns the model to train (or to evaluate, for ``none``).

    Raises:
        UserError: PEFT refused the configuration (e.g. target modules it cannot adapt).
    """
    method = METHODS[cfg.method]
    base = memory.prepare(base, cfg.model, cfg.training.gradient_checkpointing)
    if cfg.training.gradient_checkpointing and method.trains:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method.adapt is not None:
            base.enable_input_require_grads()
    if method.adapt is not None:
        try:
            return method.adapt(base, cfg, total_steps)
        except ValueError as exc:
            raise UserError(f"adalora: PEFT refused the configuration: {exc}") from None
    for p in base.parameters():
        p.requires_grad_(method.trains_base)
    return base

"""The trial's method (``TrialConfig.method``): how the base model is adapted and what the engine does
around it, in one table instead of branches on the method's name.

``adalora``: PEFT's AdaLoRA (rank pruning by ``update_and_allocate``, the orthogonal regularizer);
``lora``: PEFT's fixed-rank LoRA (a reference, or ``retrain`` of an export); ``full``: every weight
trained; ``none``: the base model as it is, evaluated only (the zero-shot reference).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from peft import get_peft_model

from adalora_search.errors import TrialFailure, UserError
from adalora_search.study.space import TrialConfig
from adalora_search.tasks import get_task
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
    lora = cfg.lora
    config = modeling.lora_config(
        lora.rank_pattern, lora.alpha_pattern, cfg.adalora, cfg.model.task, fan, lora.init, lora.use_dora
    )
    with warnings.catch_warnings():  # PEFT's advice to build EVA's adapters on the meta device: the engine
        # moves the model to its device before EVA fills them, which meta tensors cannot do
        warnings.filterwarnings("ignore", message="lora with eva initialization used with low_cpu_mem_usage=False")
        return get_peft_model(base, config)


EVA_BATCHES = 32  # training batches EVA's incremental SVD cycles through (PEFT stops once it converges)
EVA_FORWARDS = 20 * EVA_BATCHES  # forward passes after which EVA has failed to converge


def _eva(model: torch.nn.Module, batches: list[dict], input_positions: bool = True) -> None:
    """PEFT's EVA over ``batches`` (cycled until its SVDs converge, at most ``EVA_FORWARDS`` forwards), then the
    adapters back in float32 (EVA rebuilds a resized layer in the base weights' dtype).

    ``input_positions``: every adapted layer sees the input's token positions, so the attention mask picks
    the tokens of its SVD (PEFT's default); otherwise (an encoder-decoder: the decoder sees the target's
    positions) every position of a layer's input is used, padding included (PEFT's rule without a mask).

    Raises:
        TrialFailure: EVA's SVDs did not converge within ``EVA_FORWARDS`` forward passes.
    """
    from peft import initialize_lora_eva_weights
    from peft.tuners.lora.eva import forward_fn_dict, prepare_layer_inputs_fn_language_modeling
    from peft.tuners.tuners_utils import cast_adapter_dtype

    calls = iter(range(EVA_FORWARDS + 1))

    def forward(model: torch.nn.Module, inputs: dict) -> Any:
        if next(calls) == EVA_FORWARDS:
            raise TrialFailure(
                f"EVA's SVDs did not converge within {EVA_FORWARDS} forward passes; use a larger "
                "batch_size or max_length, or drop the eva reference"
            )
        return forward_fn_dict(model, inputs)

    def layer_inputs(layer_input: Any, model_input: torch.Tensor, layer_name: str) -> torch.Tensor:
        tensor = layer_input[0] if isinstance(layer_input, (tuple, list)) else layer_input
        if not input_positions:
            return tensor.reshape(-1, tensor.shape[-1])
        if tensor.dim() == 2:  # one vector per row (e.g. BERT's pooler): every row is a sample, no token mask
            return tensor.contiguous()  # e.g. hidden_states[:, 0], a strided view
        return prepare_layer_inputs_fn_language_modeling(layer_input, model_input, layer_name)

    masks = {} if input_positions else {"prepare_model_inputs_fn": None}
    initialize_lora_eva_weights(
        model,
        dataloader=batches,
        forward_fn=forward,
        prepare_layer_inputs_fn=layer_inputs,
        show_progress_bar=False,
        **masks,
    )
    cast_adapter_dtype(model, "default")


def initialize(model: torch.nn.Module, cfg: TrialConfig, batches: Callable[[], Iterable[dict]]) -> dict[str, int]:
    """What a method does once the model is on its device, before training; returns the LoRA ranks per module
    (empty for AdaLoRA, whose allocation is its own, and for ``full`` / ``none``).

    EVA (``lora.init: eva``): PEFT's ``initialize_lora_eva_weights`` over the first ``EVA_BATCHES`` training
    batches (the SVD of each adapted layer's inputs), which also redistributes the ranks (EvaConfig's rho).
    """
    if cfg.method != "lora" or cfg.lora is None:
        return {}
    if cfg.lora.init == "eva":
        _eva(model, list(islice(batches(), EVA_BATCHES)), get_task(cfg.model.task).layers_see_input)
    from peft.tuners.lora import LoraLayer

    kept = {  # the ranks as built (EVA's pattern names only those off its default r; rank 0: layer removed)
        name.removeprefix("base_model.model."): int(module.r["default"])
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }
    return {name: kept.get(name, 0) for name in sorted(cfg.lora.rank_pattern)}


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

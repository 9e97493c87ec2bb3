"""Memory options for large models: a quantized base (bitsandbytes) and the attention kernel.

``model.quantization: 4bit`` loads the frozen base weights as NF4 with bf16 compute (QLoRA,
Dettmers et al. 2023), ``8bit`` as LLM.int8(); PEFT's AdaLoRA has layers for both
(``SVDLinear4bit``, ``SVDLinear8bitLt``) and trains the adapters in float32 on top.
``model.attn_implementation`` is transformers' ``attn_implementation`` argument. Both are
checked against the platform before trial 0 (``platform_problems``): bitsandbytes quantization
and FlashAttention-2 need CUDA and their packages.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from adalora_search.errors import Problem
from adalora_search.study.spec import ModelSpec, StudySpec


def quantized(spec: ModelSpec) -> bool:
    """Whether the base weights are loaded quantized (then placed by ``device_map``, never moved)."""
    return spec.quantization != "none"


def placed(spec: ModelSpec) -> bool:
    """Whether ``from_pretrained`` places the model (``device_map``: quantized, or across GPUs); never moved."""
    return quantized(spec) or spec.device_map is not None


def load_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """Extra ``from_pretrained`` / ``from_config`` arguments for the memory options of ``spec``."""
    kwargs: dict[str, Any] = {}
    if spec.attn_implementation is not None:
        kwargs["attn_implementation"] = spec.attn_implementation
    if quantized(spec):
        from transformers import BitsAndBytesConfig

        if spec.quantization == "4bit":
            config = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            )
        else:
            config = BitsAndBytesConfig(load_in_8bit=True)
        kwargs.update(quantization_config=config, device_map={"": torch.cuda.current_device()})
    if spec.device_map is not None:  # accelerate's dispatch over the visible GPUs (the worker's slot)
        kwargs["device_map"] = spec.device_map
    return kwargs


def prepare(model: torch.nn.Module, spec: ModelSpec, gradient_checkpointing: bool) -> torch.nn.Module:
    """PEFT's ``prepare_model_for_kbit_training`` for a quantized base (norms in fp32, input grads)."""
    if not quantized(spec):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def platform_problems(spec: StudySpec, cuda: bool | None = None) -> list[Problem]:
    """What this machine lacks for the study's memory options (``cuda``: default, detected)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    on_cuda = cuda and spec.training.device != "cpu"
    m, problems = spec.model, []
    if quantized(m):
        if not on_cuda:
            problems.append(
                Problem(
                    "model.quantization",
                    m.quantization,
                    "bitsandbytes quantization needs a CUDA GPU (training.device is "
                    f"{spec.training.device!r}, CUDA available: {cuda}); use quantization: none "
                    "on this machine, or model.dtype: bfloat16 to halve the weights' memory",
                )
            )
        elif importlib.util.find_spec("bitsandbytes") is None:
            problems.append(
                Problem(
                    "model.quantization", m.quantization, "needs the bitsandbytes package: pip install bitsandbytes"
                )
            )
        if m.init == "random":
            problems.append(
                Problem(
                    "model.quantization",
                    m.quantization,
                    "quantizes pretrained weights; with model.init: random use quantization: none",
                )
            )
        if any(r.kind == "full" for r in spec.study.references):
            problems.append(
                Problem(
                    "study.references",
                    "full",
                    "full fine-tuning cannot train quantized "
                    "weights; remove the full reference, or use quantization: none",
                )
            )
        if any(r.kind == "pissa" for r in spec.study.references):
            problems.append(
                Problem(
                    "study.references",
                    "pissa",
                    "PiSSA takes the principal singular vectors out of the full-precision weights, which PEFT "
                    "cannot do on a bitsandbytes-quantized base; remove it, or use quantization: none",
                )
            )
    if m.device_map is not None and not on_cuda:
        problems.append(
            Problem(
                "model.device_map",
                m.device_map,
                f"places the model across CUDA GPUs (training.device is {spec.training.device!r}, CUDA available: "
                f"{cuda}); remove it on this machine",
            )
        )
    if m.device_map is not None and m.init == "random":
        problems.append(
            Problem("model.device_map", m.device_map, "places pretrained weights; with model.init: random remove it")
        )
    if m.attn_implementation == "flash_attention_2":
        if not on_cuda:
            problems.append(
                Problem(
                    "model.attn_implementation",
                    m.attn_implementation,
                    "FlashAttention-2 needs a CUDA GPU; use sdpa (or leave it unset) on this machine",
                )
            )
        elif importlib.util.find_spec("flash_attn") is None:
            problems.append(
                Problem(
                    "model.attn_implementation",
                    m.attn_implementation,
                    "needs the flash-attn package: pip install flash-attn; or use sdpa",
                )
            )
    return problems

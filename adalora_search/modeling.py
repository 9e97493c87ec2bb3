"""Build the base model and wrap it with PEFT (AdaLoRA, fixed-rank LoRA, or nothing).

Also reads what PEFT's rank allocator decided, copied out as plain ints so later mutations of
``peft_config.rank_pattern`` (PEFT rewrites it in place and on save) cannot change it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from peft import AdaLoraConfig, LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.adalora import SVDLinear
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from adalora_search import allocator
from adalora_search.assets import resolve_model
from adalora_search.errors import UserError
from adalora_search.space import AdaLoraKnobs, TrialConfig
from adalora_search.spec import ModelSpec, StudySpec

ADAPTER = "default"
hf_logging.set_verbosity_error()  # no load reports about the (expected) new classification head
hf_logging.disable_progress_bar()


def load_tokenizer(spec: ModelSpec) -> Any:
    path = resolve_model(spec.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"model.name_or_path = {spec.name_or_path!r}: cannot load its tokenizer ({exc}); "
                        "use a packaged name (minilm-l6), a local directory, or a reachable Hub id") from None


def build_base(spec: ModelSpec, num_labels: int, regression: bool, seed: int) -> torch.nn.Module:
    """The transformers model with a fresh head; ``init: random`` builds it from the config alone."""
    path = resolve_model(spec.name_or_path)
    kwargs: dict[str, Any] = {"num_labels": num_labels, "trust_remote_code": spec.trust_remote_code}
    if regression:
        kwargs["problem_type"] = "regression"
    torch.manual_seed(seed)
    try:
        config = AutoConfig.from_pretrained(path, **kwargs, **spec.config_overrides)
        if spec.init == "random":
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=spec.trust_remote_code)
        return AutoModelForSequenceClassification.from_pretrained(path, config=config,
                                                                  trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"model.name_or_path = {spec.name_or_path!r}: cannot load ({exc})") from None


def adalora_config(knobs: AdaLoraKnobs, total_steps: int) -> AdaLoraConfig:
    """PEFT's AdaLoraConfig for a run of ``total_steps`` optimizer steps."""
    t_init, t_final = schedule_steps(knobs, total_steps)
    return AdaLoraConfig(
        task_type=TaskType.SEQ_CLS, target_modules=list(knobs.target_modules),
        init_r=knobs.init_r, target_r=knobs.target_r, lora_alpha=knobs.lora_alpha,
        lora_dropout=knobs.lora_dropout, tinit=t_init, tfinal=t_final, deltaT=knobs.delta_t,
        beta1=knobs.beta1, beta2=knobs.beta2, orth_reg_weight=knobs.orth_reg_weight, total_step=total_steps,
    )


def schedule_steps(knobs: AdaLoraKnobs, total_steps: int) -> tuple[int, int]:
    """t_init and t_final in optimizer steps (fractions are rounded down)."""
    if knobs.schedule_unit == "fraction":
        return int(math.floor(knobs.t_init * total_steps)), int(math.floor(knobs.t_final * total_steps))
    return int(knobs.t_init), int(knobs.t_final)


def wrap(base: torch.nn.Module, cfg: TrialConfig, total_steps: int) -> torch.nn.Module:
    """Apply the trial's adapter method; returns the model to train."""
    try:
        if cfg.method == "adalora":
            model = get_peft_model(base, adalora_config(cfg.adalora, total_steps))
            allocator.install(model)  # same allocation as PEFT's, batched (see allocator.py)
            return model
        if cfg.method == "lora":
            assert cfg.lora is not None
            return get_peft_model(base, lora_config(cfg.lora.rank_pattern, cfg.lora.alpha_pattern, cfg.adalora))
    except ValueError as exc:
        raise UserError(f"adalora: PEFT refused the configuration: {exc}") from None
    for p in base.parameters():
        p.requires_grad_(True)
    return base


def lora_config(ranks: dict[str, int], alphas: dict[str, float], knobs: AdaLoraKnobs) -> LoraConfig:
    """Fixed-rank LoRA reproducing an allocation: only modules with rank > 0, full-name patterns."""
    kept = {name: r for name, r in ranks.items() if r > 0}
    default_r = max(kept.values(), default=1)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS, target_modules=sorted(kept), r=default_r,
        lora_alpha=alphas.get(next(iter(kept), ""), knobs.lora_alpha), lora_dropout=knobs.lora_dropout,
        # full module names: PEFT matches pattern keys as `(.*\.)?key$`, so each hits exactly one module
        rank_pattern=dict(kept), alpha_pattern={n: alphas[n] for n in kept},
    )


def adapted_modules(model: torch.nn.Module) -> dict[str, SVDLinear]:
    """AdaLoRA layers by their name in the base transformers model (``bert.encoder...query``)."""
    inner = model.base_model.model if isinstance(model, PeftModel) else model
    return {name: m for name, m in inner.named_modules() if isinstance(m, SVDLinear)}


def allocation(model: torch.nn.Module) -> dict[str, int]:
    """Current rank per adapted module: init_r before the first rank pruning, then the masks' sums."""
    config = model.peft_config[ADAPTER]
    modules = adapted_modules(model)
    ranks = {name: config.init_r for name in modules}
    pattern = config.rank_pattern or {}
    suffix = f".lora_E.{ADAPTER}"
    for key, mask in pattern.items():
        name = key[: -len(suffix)] if key.endswith(suffix) else key.removesuffix(".lora_E")
        ranks[name] = int(sum(bool(x) for x in (mask.tolist() if torch.is_tensor(mask) else mask)))
    return ranks


def adapter_params(model: torch.nn.Module, ranks: dict[str, int]) -> int:
    """Trainable parameters of the AdaLoRA triplets at these ranks: r·(in + out + 1) per module."""
    total = 0
    for name, module in adapted_modules(model).items():
        base = module.get_base_layer()
        total += ranks.get(name, 0) * (base.in_features + base.out_features + 1)
    return total


def head_params(model: torch.nn.Module) -> int:
    """Trainable parameters outside the adapters (the new classification head)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and "lora_" not in n)


def linear_modules(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """(in, out) features of every Linear of the model, built on the meta device (no weights read)."""
    path = resolve_model(spec.name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, num_labels=2, trust_remote_code=spec.trust_remote_code,
                                            **spec.config_overrides)
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"model.name_or_path = {spec.name_or_path!r}: cannot read its config ({exc}); "
                        "use a packaged name (minilm-l6), a local directory, or a reachable Hub id") from None
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def check_targets(spec: StudySpec, linears: dict[str, tuple[int, int]]) -> None:
    """Every target-module choice must adapt at least one Linear of the model."""
    from adalora_search.distributions import corners

    for targets in corners(spec.adalora.target_modules):
        if not matching(linears, list(targets)):
            names = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise UserError(f"adalora.target_modules = {targets}: matches no Linear module of "
                            f"{spec.model.name_or_path}; its Linear names end in {names}")


def matching(linears: dict[str, tuple[int, int]], targets: list[str]) -> dict[str, tuple[int, int]]:
    """The modules PEFT adapts for a target list (exact name or dotted suffix), head excluded."""
    return {n: shape for n, shape in linears.items() if not n.startswith(("classifier", "score"))
            and any(n == t or n.endswith("." + t) for t in targets)}

"""Build the base model and wrap it with PEFT (AdaLoRA, fixed-rank LoRA, or nothing).

Also reads what PEFT's rank allocator decided, copied out as plain ints so later mutations of
``peft_config.rank_pattern`` (PEFT rewrites it in place and on save) cannot change it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import transformers
from packaging import version
from peft import AdaLoraConfig, EvaConfig, LoraConfig
from transformers import AutoConfig, AutoTokenizer
from transformers.pytorch_utils import Conv1D

from adalora_search.errors import Problem, UserError
from adalora_search.study.spec import AdaLoraSpec, ModelSpec, ScheduleSpec
from adalora_search.tasks import batching, get_task
from adalora_search.train import memory
from adalora_search.train.allocator import ADAPTER, adapted_modules, allocation  # noqa: F401 - re-exported
from adalora_search.train.assets import resolve_model
from adalora_search.train.config_overrides import override_problems


def load_tokenizer(spec: ModelSpec) -> Any:
    """The model's tokenizer, or ``model.tokenizer``'s (packaged names resolved), with ``model.chat_template``
    when the study gives one.

    Raises:
        UserError: the tokenizer cannot be loaded.
    """
    field, name = ("model.tokenizer", spec.tokenizer) if spec.tokenizer else ("model.name_or_path", spec.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(name), trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError, ImportError) as exc:
        raise UserError(
            f"{field} = {name!r}: cannot load its tokenizer ({exc}); "
            "use a packaged name (minilm-l6), a local directory, or a reachable Hub id"
        ) from None
    if spec.chat_template is not None:  # the study's template replaces the tokenizer's everywhere
        tokenizer.chat_template = spec.chat_template
    return tokenizer


def load_config(spec: ModelSpec, label_names: list[str] | None = None) -> Any:
    """The transformers config with the task's label settings and ``config_overrides`` applied.

    Raises:
        UserError: the config cannot be read, or an override sets what the task derives from the data.
    """
    task = get_task(spec.task)
    kwargs = task.config_kwargs(label_names)
    overrides = spec.config_overrides
    problems = [  # every problem at once: what the task derives from the data, then each override's own
        Problem(f"model.config_overrides.{key}", value, f"model.task {spec.task} sets it from the data; remove it")
        for key, value in overrides.items()
        if key in kwargs
    ]
    try:
        if overrides:  # each override against the field it replaces, before anything is built
            base = AutoConfig.from_pretrained(
                resolve_model(spec.name_or_path), trust_remote_code=spec.trust_remote_code, **kwargs
            )
            problems += override_problems(base, {k: v for k, v in overrides.items() if k not in kwargs})
        if problems:
            raise UserError(f"{len(problems)} problem(s) with model.config_overrides", problems)
        config = AutoConfig.from_pretrained(
            resolve_model(spec.name_or_path),
            trust_remote_code=spec.trust_remote_code,
            **kwargs,
            **spec.config_overrides,
        )
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model.name_or_path = {spec.name_or_path!r}: cannot read its config ({exc}); "
            "use a packaged name (minilm-l6), a local directory, or a reachable Hub id"
        ) from None
    if why := task.check_config(config):
        raise UserError(f"model.task = {spec.task!r}: {spec.name_or_path}: {why}")
    if task.pools_on_pad:  # GPT-2-style models pool the last token that is not pad: the id the batches pad with
        config.pad_token_id = batching.pad_id(load_tokenizer(spec))
    return config


def build_base(spec: ModelSpec, label_names: list[str] | None, seed: int) -> torch.nn.Module:
    """The task's transformers model (a fresh head where the task has one).

    ``init: random`` builds it from the (overridden) config alone; ``dtype: bfloat16`` keeps the
    weights in bf16. Raises ``UserError`` when the checkpoint cannot be loaded as asked.
    """
    config = load_config(spec, label_names)
    auto = getattr(transformers, get_task(spec.task).auto_class)
    torch.manual_seed(seed)
    try:
        if spec.init == "random":
            model = auto.from_config(config, trust_remote_code=spec.trust_remote_code, **memory.load_kwargs(spec))
        else:
            model = auto.from_pretrained(
                resolve_model(spec.name_or_path),
                config=config,
                trust_remote_code=spec.trust_remote_code,
                ignore_mismatched_sizes=spec.ignore_mismatched_sizes,
                **_weights_dtype(spec),
                **memory.load_kwargs(spec),
            )
    except (OSError, ValueError, RuntimeError) as exc:
        hint = (
            "; set model.ignore_mismatched_sizes: true to re-initialise the head" if "size" in str(exc).lower() else ""
        )
        raise UserError(f"model.name_or_path = {spec.name_or_path!r}: cannot load ({str(exc)[:300]}){hint}") from None
    if memory.quantized(spec):
        return model  # placed and typed by bitsandbytes
    return model.to(torch.bfloat16) if spec.dtype == "bfloat16" else model


def _weights_dtype(spec: ModelSpec) -> dict[str, Any]:
    """The dtype a checkpoint's weights load in: float32, or bfloat16 for ``model.dtype: bfloat16``.

    transformers 5 otherwise keeps the checkpoint's stored dtype (bf16 for most recent LLMs), which
    would break ``auto`` / ``float32`` (fp32 weights); a quantized base is typed by bitsandbytes.
    """
    if memory.quantized(spec):
        return {}
    key = "dtype" if version.parse(transformers.__version__) >= version.parse("4.56") else "torch_dtype"
    return {key: torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32}


# the study file's adalora fields -> PEFT's AdaLoraConfig names (the one place they are renamed)
PEFT_NAMES = {
    "target_modules": "target_modules",
    "init_r": "init_r",
    "target_r": "target_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "beta1": "beta1",
    "beta2": "beta2",
    "orth_reg_weight": "orth_reg_weight",
    "schedule.delta_t": "deltaT",
}
# adalora fields PEFT gets in optimizer steps, converted by schedule_steps (with schedule.unit)
SCHEDULE_NAMES = {"schedule.t_init": "tinit", "schedule.t_final": "tfinal"}


def adalora_config(
    adalora: AdaLoraSpec, total_steps: int, task: str = "classification", fan_in_fan_out: bool = False
) -> AdaLoraConfig:
    """PEFT's AdaLoraConfig for a run of ``total_steps`` optimizer steps (every knob of ``adalora`` fixed).

    ``schedule.t_init`` / ``t_final`` become PEFT's ``tinit`` / ``tfinal`` in optimizer steps.
    """
    fields = adalora.model_dump()
    values = {peft: _at(fields, path) for path, peft in PEFT_NAMES.items()}
    steps = dict(zip(("schedule.t_init", "schedule.t_final"), schedule_steps(adalora.schedule, total_steps)))
    values |= {peft: steps[path] for path, peft in SCHEDULE_NAMES.items()}
    return AdaLoraConfig(
        task_type=get_task(task).peft_task_type,
        total_step=total_steps,
        fan_in_fan_out=fan_in_fan_out,
        **values,
    )


def _at(fields: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        fields = fields[part]
    return fields


def schedule_steps(schedule: ScheduleSpec, total_steps: int) -> tuple[int, int]:
    """t_init and t_final in optimizer steps (fractions of ``total_steps`` are rounded down)."""
    if schedule.unit == "fraction":
        return int(math.floor(schedule.t_init * total_steps)), int(math.floor(schedule.t_final * total_steps))
    return int(schedule.t_init), int(schedule.t_final)


def lora_config(
    ranks: dict[str, int],
    alphas: dict[str, float],
    knobs: AdaLoraSpec,
    task: str = "classification",
    fan_in_fan_out: bool = False,
    init: str = "default",
    use_dora: bool = False,
) -> LoraConfig:
    """Fixed-rank LoRA reproducing an allocation: only modules with rank > 0, full-name patterns.

    ``init``: PEFT's ``init_lora_weights`` ("default": Kaiming A and zero B; "pissa": the principal
    singular vectors of each weight; "eva": from activations, ``methods.initialize``); ``use_dora``: DoRA.
    """
    kept = {name: r for name, r in ranks.items() if r > 0}
    default_r = max(kept.values(), default=1)
    return LoraConfig(
        task_type=get_task(task).peft_task_type,
        fan_in_fan_out=fan_in_fan_out,
        target_modules=sorted(kept),
        r=default_r,
        lora_alpha=alphas.get(next(iter(kept), ""), knobs.lora_alpha),
        lora_dropout=knobs.lora_dropout,
        # full module names: PEFT matches pattern keys as `(.*\.)?key$`, so each hits exactly one module
        rank_pattern=dict(kept),
        alpha_pattern={n: alphas[n] for n in kept},
        init_lora_weights=True if init == "default" else init,
        # rho 2: a matrix may get up to twice its rank; label masks only where labels sit on tokens
        eva_config=EvaConfig(use_label_mask=get_task(task).token_labels) if init == "eva" else None,
        use_dora=use_dora,
    )


def features(module: torch.nn.Module) -> tuple[int, int]:
    """(in, out) features of a Linear or a transformers Conv1D (GPT-2's weight is [in, out])."""
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return int(module.in_features), int(module.out_features)


def triplet_params(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters of one AdaLoRA triplet per adapted module: in + out + 1 (a rank-r module has r·that)."""
    return {name: sum(features(module.get_base_layer())) + 1 for name, module in adapted_modules(model).items()}


def head_params(model: torch.nn.Module) -> int:
    """Trainable parameters outside the adapters (the new classification head)."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n)


def inspect(spec: ModelSpec, label_names: list[str] | None = None) -> tuple[dict[str, tuple[int, int]], Any]:
    """(in, out) features of every Linear / Conv1D of the model, and its config.

    The model is built on the meta device from its config: no weights are read.
    """
    model, config = meta_model(spec, label_names)
    linears = {n: features(m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
    return linears, config


def meta_model(spec: ModelSpec, label_names: list[str] | None = None) -> tuple[torch.nn.Module, Any]:
    """The task's model built on the meta device from its config (no weights read), and the config."""
    config = load_config(spec, label_names)
    auto = getattr(transformers, get_task(spec.task).auto_class)
    try:
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=spec.trust_remote_code), config
    except (OSError, ValueError) as exc:
        raise UserError(f"model.task = {spec.task!r}: {spec.name_or_path} has no such model ({exc})") from None


def conv1d_targets(model: torch.nn.Module, targets: list[str]) -> bool:
    """True when the targeted modules are transformers ``Conv1D`` (GPT-2): PEFT needs ``fan_in_fan_out``."""
    return any(isinstance(m, Conv1D) and targeted(n, targets) for n, m in model.named_modules())


HEADS = ("classifier", "score", "lm_head", "qa_outputs")  # task heads: trained in full or frozen, never adapted


def matching(linears: dict[str, tuple[int, int]], targets: list[str]) -> dict[str, tuple[int, int]]:
    """The modules PEFT adapts for a target list (exact name or dotted suffix), heads excluded."""
    return {n: shape for n, shape in linears.items() if targeted(n, targets)}


def targeted(name: str, targets: list[str]) -> bool:
    """Whether PEFT adapts module ``name`` for ``targets`` (exact name or dotted suffix); heads never."""
    return not name.startswith(HEADS) and any(name == t or name.endswith("." + t) for t in targets)

"""The study file as nested, frozen Pydantic models; every default lives in these models and nowhere else: this
module and the sections it assembles (``study_section.py``, ``data_spec.py``, ``data_sources.py``,
``samplers.py``, ``trackers.py``).

Each stage takes only its own sub-spec: data.py a ``DataSpec``, the engine a ``TrialConfig``
(space.py), the runner the ``StudySection``. ``StudySpec.model_json_schema()`` is the JSON Schema
``adalora-search schema`` prints: every field carries a description (its default appended).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from adalora_search.study.data_spec import DataSpec, SplitNames, SplitSpec  # noqa: F401 - re-exported
from adalora_search.study.distributions import FloatRange, IntRange, fixed_values_schema, tunable
from adalora_search.study.frozen import Frozen, describe_defaults
from adalora_search.study.study_section import (  # noqa: F401 - re-exported: one place to import the spec from
    LORA_LEARNING_RATES,
    METRIC_DIRECTIONS,
    Objective,
    Reference,
    StudySection,
)
from adalora_search.study.trackers import TrackingSpec
from adalora_search.tasks import TASKS


# ---------------------------------------------------------------- model
class ModelSpec(Frozen):
    """``model``: which model, for which task, and how it is built."""

    name_or_path: str = Field(min_length=1, description="packaged name (minilm-l6), Hub id, or local directory")
    task: Literal[tuple(TASKS)] = Field(  # type: ignore[valid-type] - the registry's names
        default="classification", description="a task of the registry in adalora_search/tasks"
    )
    init: Literal["pretrained", "random"] = Field(
        default="pretrained",
        description="pretrained: the checkpoint's weights; random: built from the "
        "(overridden) config, for tests and smoke runs",
    )
    config_overrides: dict[str, Union[int, float, str, bool]] = Field(
        default_factory=dict, description="transformers config fields to set, e.g. num_hidden_layers"
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto: fp32 weights, bf16 autocast on CUDA; bfloat16: weights in bf16 too"
    )
    trust_remote_code: bool = Field(default=False, description="run Python code shipped with the model (trust it!)")
    ignore_mismatched_sizes: bool = Field(
        default=False, description="load a checkpoint whose head has another number of labels (head re-initialised)"
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        default="none",
        description="CUDA only: frozen base weights quantized by bitsandbytes (4bit: NF4 with "
        "bf16 compute, QLoRA-style; 8bit: LLM.int8()); adapters train in float32",
    )
    device_map: Literal["auto", "balanced"] | None = Field(
        default=None,
        description="CUDA only: place one trial's model across the worker's GPUs (accelerate's big-model "
        "dispatch; with run --gpus-per-trial N, each worker gets N GPUs); default: one device",
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        default=None,
        description="transformers' attention kernel; default: the model's own choice; "
        "flash_attention_2 needs CUDA and the flash-attn package",
    )
    tokenizer: str | None = Field(
        default=None,
        min_length=1,
        description="the tokenizer of another model (packaged name, Hub id or directory), e.g. for a model "
        "built from a config alone; default: the model's own",
    )
    chat_template: str | None = Field(
        default=None,
        min_length=1,
        description="causal_lm: a Jinja chat template used instead of the tokenizer's "
        "(in training, generation and the export), e.g. one with {% generation %} blocks around the replies",
    )


# ---------------------------------------------------------------- training
class GenerationSpec(Frozen):
    """Decoding of validation/test inputs for the generation metrics (causal_lm: exact_match, rouge_l;
    seq2seq: ROUGE); transformers' ``generate`` arguments, greedy by default.
    """

    max_new_tokens: int = Field(default=32, ge=1, description="tokens generated per prompt at most")
    num_beams: int = Field(default=1, ge=1, description="beam search width (1: greedy)")
    length_penalty: float = Field(
        default=1.0, description="beam search: > 1 favours longer outputs, < 1 shorter (transformers' meaning)"
    )
    max_samples: int = Field(default=64, ge=1, description="rows of each split that are generated")
    at_evals: bool = Field(default=False, description="also at every evaluation (then trial pruning can use them)")


class CompileSpec(Frozen):
    """``torch.compile`` options of a compiled trial (PyTorch's own names and meanings)."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        default="default",
        description="reduce-overhead and max-autotune record CUDA graphs on a GPU (no kernel "
        "launch cost; gradient_accumulation 1 only)",
    )
    dynamic: bool | None = Field(
        default=None,
        description="null: a second graph with dynamic shapes once a shape changes; true: dynamic "
        "from the start; false: one graph per batch shape (set data.pad_to_multiple_of)",
    )
    fullgraph: bool = Field(
        default=False, description="refuse graph breaks (the trial then falls back to eager, naming where the break is)"
    )

    @property
    def cuda_graphs(self) -> bool:
        """Whether the mode records CUDA graphs on a GPU (``torch._inductor.list_mode_options``, torch 2.13)."""
        return self.mode in ("reduce-overhead", "max-autotune")


class TrainingSpec(Frozen):
    """``training``: one trial's optimisation; ``learning_rate`` and ``weight_decay`` are knobs."""

    epochs: float | None = Field(default=None, gt=0, description="passes over the training rows (or max_steps)")
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; wins over epochs")
    batch_size: int = Field(default=32, ge=1, description="training rows per batch")
    eval_batch_size: int = Field(default=128, ge=1, description="rows per evaluation batch")
    gradient_accumulation: int = Field(default=1, ge=1, description="batches per optimizer step")
    learning_rate: tunable(float, FloatRange, "must be > 0", gt=0) = Field(
        default=1e-3, description="AdamW's peak learning rate"
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="learning rate schedule after warmup"
    )
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1, description="fraction of the steps warming the rate up")
    weight_decay: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.0, description="AdamW's decoupled weight decay"
    )
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="gradient norm clipping (null: none)")
    eval_every: int = Field(default=50, ge=1, description="optimizer steps between validation passes")
    seed: int = Field(default=0, description="seed of new weights, data order and dropout")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available")
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads per worker")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations: less memory, slower")
    compile: bool | CompileSpec = Field(
        default=False,
        description="torch.compile the training forward and loss once per trial (true: default "
        "options); evaluation stays eager; a trial that cannot compile runs eager",
    )
    generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(), description="causal_lm, seq2seq: decoding for the generation metrics"
    )

    @model_validator(mode="after")
    def _length(self) -> TrainingSpec:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set training.epochs or training.max_steps")
        return self


# ---------------------------------------------------------------- adalora
class ScheduleSpec(Frozen):
    """AdaLoRA's budget schedule: hold for t_init, cut every delta_t steps, freeze for t_final."""

    unit: Literal["fraction", "steps"] = Field(
        default="fraction", description="unit of t_init and t_final: a fraction of the run's optimizer steps, or steps"
    )
    t_init: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.1, description="steps (or fraction) trained with the full budget before rank pruning (unit)"
    )
    t_final: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.2, description="last steps (or fraction) trained with the final allocation frozen (unit)"
    )
    delta_t: tunable(int, IntRange, "delta_t must be >= 1 step between rank allocations", ge=1) = Field(
        default=10, description="optimizer steps between rank allocations"
    )


_BETA = "beta must be in the open interval (0, 1) (PEFT's rank allocator asserts 0 < beta < 1); e.g. 0.85"


class AdaLoraSpec(Frozen):
    """``adalora``: PEFT AdaLoraConfig's knobs, each fixed or searched."""

    target_modules: tunable(list[str], rule="name at least one module, e.g. [query, value]", min_length=1) = Field(
        default_factory=lambda: ["query", "value"], description="modules adapted: names or dotted name ends"
    )
    init_r: tunable(int, IntRange, "ranks must be >= 1", ge=1) = Field(
        default=12, description="triplets per matrix at the start: b(0) = init_r x matrices"
    )
    target_r: tunable(int, IntRange, "ranks must be >= 1", ge=1) = Field(
        default=8, description="mean triplets per matrix at the end: b(T) = target_r x matrices; < init_r"
    )
    lora_alpha: tunable(float, FloatRange, "must be > 0", gt=0) = Field(
        default=32.0, description="scale: the update is multiplied by lora_alpha / init_r"
    )
    lora_dropout: tunable(float, FloatRange, "lora_dropout must be in [0, 1)", ge=0, lt=1) = Field(
        default=0.0, description="dropout probability on the adapter's input"
    )
    schedule: ScheduleSpec = Field(default=ScheduleSpec(), description="when the budget is cut (defaults: each field)")
    beta1: tunable(float, FloatRange, _BETA, gt=0, lt=1) = Field(
        default=0.85, description="smoothing of the importance (sensitivity) moving average"
    )
    beta2: tunable(float, FloatRange, _BETA, gt=0, lt=1) = Field(
        default=0.85, description="smoothing of the uncertainty moving average"
    )
    orth_reg_weight: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.5, description="weight of the orthogonality regulariser of P and Q in the loss"
    )


# the sections that hold knobs: their knob paths are the Optuna parameter names and a baseline's keys
KNOB_SECTIONS = {"training": TrainingSpec, "adalora": AdaLoraSpec}


# ---------------------------------------------------------------- baselines
def _fixed_values(schema: dict[str, Any]) -> None:
    """A baseline's ``params`` in the JSON Schema: each knob path with its value's type, nothing else."""
    description = schema.get("description")
    schema.clear()
    schema.update(fixed_values_schema(KNOB_SECTIONS), description=description)


class Baseline(Frozen):
    """A named fixed configuration, enqueued before the sampler's first trial."""

    name: str = Field(min_length=1, description="how the summary and the report call it; unique")
    params: dict[str, Union[float, int, str, list[str]]] = Field(
        default_factory=dict,
        description="knob path (e.g. adalora.init_r) -> value",
        json_schema_extra=_fixed_values,
    )


# `adalora-search schema` prints StudySpec's JSON Schema under this id (an identifier: nothing is served there)
SCHEMA_ID = "https://adalora-search.dev/schema/study.json"


def _root_schema(schema: dict[str, Any], cls: type[Frozen]) -> None:
    describe_defaults(schema, cls)
    schema.update({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID})


def study_schema() -> dict[str, Any]:
    """The study file's JSON Schema as ``adalora-search schema`` prints it (descriptions in Markdown)."""
    schema = StudySpec.model_json_schema()
    _markdown(schema)
    return schema


def _markdown(node: Any) -> None:
    """Descriptions as editors render them (Markdown): `code`, not the docstrings' reStructuredText ``code``."""
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            node["description"] = node["description"].replace("``", "`")
        for value in node.values():
            _markdown(value)
    elif isinstance(node, list):
        for value in node:
            _markdown(value)


class StudySpec(Frozen):
    """The whole study file."""

    model_config = ConfigDict(json_schema_extra=_root_schema)

    study: StudySection = Field(description="name, storage, objectives, sampler, trial pruner, trial budget")
    model: ModelSpec = Field(description="the model to fine-tune: a packaged name, Hub id or directory, or a mapping")
    data: DataSpec = Field(description="the rows: source, splits and the fields the task reads")
    training: TrainingSpec = Field(description="one trial's optimisation")
    adalora: AdaLoraSpec = Field(default=AdaLoraSpec(), description="AdaLoRA's knobs (defaults: each field)")
    baselines: list[Baseline] = Field(
        default_factory=list,
        description="fixed configurations run first; the report states the best trial's gain over each",
    )
    tracking: TrackingSpec = Field(
        default=TrackingSpec(),
        description="experiment trackers fed by every trial: MLflow, TensorBoard (off by default)",
    )
    _file: Path | None = PrivateAttr(default=None)  # the study file it was read from (loader.load_spec)

    @property
    def study_file(self) -> Path | None:
        """The study file this spec was read from (absolute), or None for a spec built in Python; the default
        storage, artifact store and report folder are beside it.
        """
        return self._file

    @field_validator("model", mode="before", json_schema_input_type=Union[str, ModelSpec])
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name_or_path": value} if isinstance(value, str) else value

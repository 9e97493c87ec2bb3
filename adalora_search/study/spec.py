"""The study file as nested, frozen Pydantic models; every default lives here and only here (with the
closed unions it uses: ``samplers.py``, ``data_sources.py``).

Each stage takes only its own sub-spec: data.py a ``DataSpec``, the engine a ``TrialConfig``
(space.py), the runner the ``StudySection``. ``StudySpec.model_json_schema()`` is the JSON Schema
``adalora-search schema`` prints: every field carries a description (its default appended).
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from adalora_search.study.data_sources import Source
from adalora_search.study.distributions import FloatRange, IntRange, fixed_values_schema, tunable
from adalora_search.study.frozen import Frozen, describe_defaults
from adalora_search.study.samplers import PrunerSpec, SamplerSpec
from adalora_search.study.trackers import TrackingSpec
from adalora_search.train.tasks import TASKS

# ---------------------------------------------------------------- study
# which way each metric is better, from the task registry (each task's `metrics`): an objective's
# direction defaults from it
METRIC_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    **{metric: direction for task in TASKS.values() for metric, direction in task.metrics.items()},
    "trainable_params": "minimize",
}


class Objective(Frozen):
    """One optimisation target; ``trainable_params`` makes a budget-vs-quality Pareto search."""

    metric: Literal["accuracy", "f1_macro", "mcc", "pearson", "spearman", "eval_loss", "trainable_params",
                    "perplexity", "exact_match", "rouge_l", "f1", "precision", "recall"] = Field(
        description="a metric of the task on the validation split, or trainable_params (after rank pruning)")
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None, description="maximize or minimize the metric (default: minimize for eval_loss, perplexity, "
                                  "trainable_params; else maximize)")

    @model_validator(mode="before")
    @classmethod
    def _default_direction(cls, data: Any) -> Any:
        """Fill a missing direction from the metric, so every reader sees the resolved one."""
        if isinstance(data, dict) and data.get("direction") is None and data.get("metric") in METRIC_DIRECTIONS:
            return {**data, "direction": METRIC_DIRECTIONS[data["metric"]]}
        return data

    @property
    def resolved_direction(self) -> Literal["maximize", "minimize"]:
        """The direction written in the file, else the metric's natural one (METRIC_DIRECTIONS)."""
        return self.direction or METRIC_DIRECTIONS[self.metric]


# plain LoRA often diverges at the learning rate AdaLoRA did well with, so its rate is chosen on
# validation from these: the default of a `lora` reference and of `adalora-search retrain`
LORA_LEARNING_RATES: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)


class Reference(Frozen):
    """A non-AdaLoRA run beside the search, trained with the best trial's settings unless overridden.

    ``lora``: uniform rank over the best trial's target modules, at its final rank budget;
    ``full``: every weight trainable (usually wants a lower learning rate);
    ``zero_shot``: the base model evaluated with no adapter and no training.
    """

    kind: Literal["lora", "full", "zero_shot"] = Field(
        description="lora: uniform rank at the best trial's final budget; full: every weight; zero_shot: no training")
    learning_rate: float | list[float] | None = Field(
        default=None, description="one rate, or several: each is trained, the best on validation is kept; "
        f"default: lora {list(LORA_LEARNING_RATES)}, full the best trial's")
    epochs: float | None = Field(default=None, gt=0,
                                 description="passes over the training rows (default: as the trials)")

    @field_validator("learning_rate")
    @classmethod
    def _positive(cls, value: float | list[float] | None) -> float | list[float] | None:
        rates = value if isinstance(value, list) else [value] if value is not None else []
        if any(r <= 0 for r in rates) or (isinstance(value, list) and not value):
            raise ValueError(f"learning rates must be > 0 and at least one, but got {value}")
        return value

    @property
    def learning_rates(self) -> list[float | None]:
        """The rates to train, in order (None: the best trial's own rate; zero-shot trains nothing)."""
        if self.kind == "zero_shot":
            return [None]
        if self.learning_rate is None:
            return list(LORA_LEARNING_RATES) if self.kind == "lora" else [None]
        return list(self.learning_rate) if isinstance(self.learning_rate, list) else [self.learning_rate]


class StudySection(Frozen):
    """``study``: name, storage, objectives, sampler, trial pruner and the budget of trials."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$",
                      description="the Optuna study name (letters, digits, _ . -); names the artifacts directory too")
    storage: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite file beside the study file")
    objective: Objective | list[Objective] = Field(
        default=Objective(metric="accuracy"), description="one objective, or a list for a Pareto search")
    n_trials: int | None = Field(default=None, ge=1, description="finished (complete + trial-pruned) trials for "
                                 "the whole study, over all workers and resumes (default: none, until timeout)")
    timeout: float | None = Field(default=None, gt=0, description="seconds a run goes on (default: none)")
    sampler: SamplerSpec = Field(default_factory=lambda: SamplerSpec.default(),
                                 description="the Optuna sampler, chosen by type (default: tpe)")
    pruner: PrunerSpec = Field(default_factory=lambda: PrunerSpec.default(),
                               description="the trial pruner, chosen by type (default: median)")
    prune_warmup: Literal["after_t_init", "none"] = Field(
        default="after_t_init", description="no trial pruning before AdaLoRA's first rank allocation"
    )
    heartbeat_interval: int = Field(default=30, ge=1, description="seconds between worker heartbeats")
    max_retry: int = Field(default=2, ge=0, description="re-runs of a trial whose worker died")
    max_consecutive_failures: int = Field(
        default=3, ge=1, description="stop the study after this many failed trials in a row (fix the cause first)")
    keep_top_k_adapters: int = Field(default=0, ge=0, description="save the adapters of the k best trials")
    artifact_store: str | None = Field(
        default=None, min_length=1, description="Optuna artifact store of the kept adapters: a directory (relative "
        "to the study file) or s3://BUCKET (needs boto3); default <study file dir>/<name>_artifacts")
    references: list[Reference] = Field(
        default_factory=list, description="reference runs after the search: uniform LoRA, full fine-tuning"
    )

    @property
    def objectives(self) -> list[Objective]:
        return self.objective if isinstance(self.objective, list) else [self.objective]


# ---------------------------------------------------------------- model
class ModelSpec(Frozen):
    """``model``: which model, for which task (tasks/), and how it is built."""

    name_or_path: str = Field(min_length=1, description="packaged name (minilm-l6), Hub id, or local directory")
    task: Literal["classification", "regression", "token_classification", "causal_lm"] = Field(
        default="classification", description="a task of the registry in adalora_search/tasks")
    init: Literal["pretrained", "random"] = Field(
        default="pretrained", description="pretrained: the checkpoint's weights; random: built from the "
                                          "(overridden) config, for tests and smoke runs"
    )
    config_overrides: dict[str, Union[int, float, str, bool]] = Field(
        default_factory=dict, description="transformers config fields to set, e.g. num_hidden_layers")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto: fp32 weights, bf16 autocast on CUDA; bfloat16: weights in bf16 too")
    trust_remote_code: bool = Field(default=False, description="run Python code shipped with the model (trust it!)")
    ignore_mismatched_sizes: bool = Field(
        default=False, description="load a checkpoint whose head has another number of labels (head re-initialised)")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        default="none", description="CUDA only: frozen base weights quantized by bitsandbytes (4bit: NF4 with "
                                    "bf16 compute, QLoRA-style; 8bit: LLM.int8()); adapters train in float32")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        default=None, description="transformers' attention kernel; default: the model's own choice; "
                                  "flash_attention_2 needs CUDA and the flash-attn package")


# ---------------------------------------------------------------- data
class SplitSpec(Frozen):
    """Carve validation/test out of the train split (stratified for classification)."""

    validation: float = Field(default=0.1, gt=0, lt=1, description="fraction of the rows held out for validation")
    test: float = Field(default=0.0, ge=0, lt=1, description="fraction of the rows held out for test (0: no test)")
    seed: int = Field(default=0, description="seed of the random split (and of the sample caps)")
    stratify: bool = Field(default=True, description="keep the class proportions in each split (classification)")

    @model_validator(mode="after")
    def _fits(self) -> SplitSpec:
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test must be < 1, but got {self.validation + self.test}")
        return self


class SplitNames(Frozen):
    """Which of the source's splits play train/validation/test (null: not used, e.g. GLUE's unlabeled test)."""

    train: str = Field(default="train", description="the source's split to train on")
    validation: str | None = Field(default="validation", description="the split to validate on (null: none)")
    test: str | None = Field(default="test", description="the split to test on (null: none)")


# fields of DataSpec that only some tasks read (a task refuses the ones it does not use)
TASK_DATA_FIELDS = {"text_fields", "label_field", "prompt_field", "prompt_template", "response_field",
                    "messages_field", "use_chat_template", "drop_blank_labels"}


class DataSpec(Frozen):
    """``data``: the source, its splits and which fields the task reads (tasks/ says which)."""

    source: Source = Field(description="a packaged dataset's name, or {type: packaged|hub|files|disk, ...}")
    splits: SplitNames = Field(default=SplitNames(), description="which source splits to use (defaults: by name)")
    text_fields: list[str] | None = Field(
        default=None, min_length=1, max_length=2,
        description="classification/regression: one field, or two for sentence pairs; token_classification: "
                    "the column of word lists; causal_lm: one plain-text column")
    label_field: str = Field(default="label", description="class, score or tag-list column")
    prompt_field: str | None = Field(default=None, description="causal_lm: the prompt column")
    prompt_template: str | None = Field(
        default=None, description="causal_lm: a prompt built from columns, e.g. 'Headline: {headline}\nTopic:'")
    response_field: str | None = Field(default=None, description="causal_lm: what the model learns to write")
    messages_field: str | None = Field(default=None, description="causal_lm: a column of chat turns {role, content}")
    use_chat_template: bool = Field(
        default=False, description="causal_lm: render prompt/response as a user and an assistant turn")
    split: SplitSpec | None = Field(default=None, description="carve validation (and test) rows out of the train "
                                    "split; omit when the source has a validation split")
    deduplicate: bool = Field(default=True, description="remove repeated rows (validate counts them)")
    drop_blank_labels: bool = Field(default=False, description="drop rows whose label is empty instead of refusing")
    max_length: int = Field(default=128, ge=8, le=8192, description="tokens per row at most (longer rows are cut)")
    max_train_samples: int | None = Field(default=None, ge=1, description="at most this many training rows, a "
                                          "random sample (default: all)")
    max_eval_samples: int | None = Field(default=None, ge=1, description="at most this many validation rows, and "
                                         "test rows, a random sample (default: all)")

    @field_validator("source", mode="before", json_schema_input_type=Union[str, Source])
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"type": "packaged", "name": value} if isinstance(value, str) else value


# ---------------------------------------------------------------- training
class GenerationSpec(Frozen):
    """Greedy decoding of validation/test prompts (causal_lm) for exact_match and rouge_l."""

    max_new_tokens: int = Field(default=32, ge=1, description="tokens generated per prompt at most")
    max_samples: int = Field(default=64, ge=1, description="rows of each split that are generated")
    at_evals: bool = Field(default=False, description="also at every evaluation (then trial pruning can use them)")


class TrainingSpec(Frozen):
    """``training``: one trial's optimisation; ``learning_rate`` and ``weight_decay`` are knobs."""

    epochs: float | None = Field(default=None, gt=0, description="passes over the training rows (or max_steps)")
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; wins over epochs")
    batch_size: int = Field(default=32, ge=1, description="training rows per batch")
    eval_batch_size: int = Field(default=128, ge=1, description="rows per evaluation batch")
    gradient_accumulation: int = Field(default=1, ge=1, description="batches per optimizer step")
    learning_rate: tunable(float, FloatRange, "must be > 0", gt=0) = Field(
        default=1e-3, description="AdamW's peak learning rate")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="learning rate schedule after warmup")
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1, description="fraction of the steps warming the rate up")
    weight_decay: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.0, description="AdamW's decoupled weight decay")
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="gradient norm clipping (null: none)")
    eval_every: int = Field(default=50, ge=1, description="optimizer steps between validation passes")
    seed: int = Field(default=0, description="seed of new weights, data order and dropout")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available")
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads per worker")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations: less memory, slower")
    generation: GenerationSpec = Field(default_factory=lambda: GenerationSpec(),
                                       description="causal_lm: greedy generation for exact_match / rouge_l")

    @model_validator(mode="after")
    def _length(self) -> TrainingSpec:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set training.epochs or training.max_steps")
        return self


# ---------------------------------------------------------------- adalora
class ScheduleSpec(Frozen):
    """AdaLoRA's budget schedule: hold for t_init, cut every delta_t steps, freeze for t_final."""

    unit: Literal["fraction", "steps"] = Field(
        default="fraction", description="unit of t_init and t_final: a fraction of the run's optimizer steps, or steps")
    t_init: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.1, description="steps (or fraction) trained with the full budget before rank pruning (unit)")
    t_final: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.2, description="last steps (or fraction) trained with the final allocation frozen (unit)")
    delta_t: tunable(int, IntRange, "delta_t must be >= 1 step between rank allocations", ge=1) = Field(
        default=10, description="optimizer steps between rank allocations")


_BETA = "beta must be in the open interval (0, 1) (PEFT's rank allocator asserts 0 < beta < 1); e.g. 0.85"


class AdaLoraSpec(Frozen):
    """``adalora``: PEFT AdaLoraConfig's knobs (modeling.PEFT_NAMES maps them), each fixed or searched."""

    target_modules: tunable(list[str], rule="name at least one module, e.g. [query, value]", min_length=1) = Field(
        default_factory=lambda: ["query", "value"], description="modules adapted: names or dotted name ends")
    init_r: tunable(int, IntRange, "ranks must be >= 1", ge=1) = Field(
        default=12, description="triplets per matrix at the start: b(0) = init_r x matrices")
    target_r: tunable(int, IntRange, "ranks must be >= 1", ge=1) = Field(
        default=8, description="mean triplets per matrix at the end: b(T) = target_r x matrices; < init_r")
    lora_alpha: tunable(float, FloatRange, "must be > 0", gt=0) = Field(
        default=32.0, description="scale: the update is multiplied by lora_alpha / init_r")
    lora_dropout: tunable(float, FloatRange, "lora_dropout must be in [0, 1)", ge=0, lt=1) = Field(
        default=0.0, description="dropout probability on the adapter's input")
    schedule: ScheduleSpec = Field(default=ScheduleSpec(), description="when the budget is cut (defaults: each field)")
    beta1: tunable(float, FloatRange, _BETA, gt=0, lt=1) = Field(
        default=0.85, description="smoothing of the importance (sensitivity) moving average")
    beta2: tunable(float, FloatRange, _BETA, gt=0, lt=1) = Field(
        default=0.85, description="smoothing of the uncertainty moving average")
    orth_reg_weight: tunable(float, FloatRange, "must be >= 0", ge=0) = Field(
        default=0.5, description="weight of the orthogonality regulariser of P and Q in the loss")


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
        default_factory=dict, description="knob path (e.g. adalora.init_r) -> value", json_schema_extra=_fixed_values,
    )


# `adalora-search schema` prints StudySpec's JSON Schema under this id (an identifier: nothing is served there)
SCHEMA_ID = "https://adalora-search.dev/schema/study.json"


def _root_schema(schema: dict[str, Any], cls: type[Frozen]) -> None:
    describe_defaults(schema, cls)
    schema.update({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID})


class StudySpec(Frozen):
    """The whole study file."""

    model_config = ConfigDict(json_schema_extra=_root_schema)

    study: StudySection = Field(description="name, storage, objectives, sampler, trial pruner, trial budget")
    model: ModelSpec = Field(description="the model to fine-tune: a packaged name, Hub id or directory, or a mapping")
    data: DataSpec = Field(description="the rows: source, splits and the fields the task reads")
    training: TrainingSpec = Field(description="one trial's optimisation")
    adalora: AdaLoraSpec = Field(default=AdaLoraSpec(), description="AdaLoRA's knobs (defaults: each field)")
    baselines: list[Baseline] = Field(default_factory=list, description="fixed configurations run first; the "
                                      "report states the best trial's gain over each")
    tracking: TrackingSpec = Field(default=TrackingSpec(), description="experiment trackers fed by every "
                                   "trial: MLflow, TensorBoard (off by default)")

    @field_validator("model", mode="before", json_schema_input_type=Union[str, ModelSpec])
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name_or_path": value} if isinstance(value, str) else value

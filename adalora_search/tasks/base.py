"""What a task is: the contract between the data pipeline, the model builder and the evaluator.

A task owns everything that differs between, say, sequence classification and causal language
modelling: which source columns it reads, how rows become ``input_ids`` and ``labels``, how rows
become a batch (``collate``) and prompts a generation (``generate``), which transformers Auto class
and PEFT ``TaskType`` it uses, how a split is evaluated and which metrics a study may optimise (each
with its default direction). Adding a task is one module
beside this one plus one line in ``tasks/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from adalora_search.errors import Problem, UserError
from adalora_search.tasks import batching
from adalora_search.tasks.batching import Generation

if TYPE_CHECKING:
    import torch

    from adalora_search.study.spec import DataSpec, TrainingSpec
    from adalora_search.train.data import Split

Direction = Literal["maximize", "minimize"]
Rows = dict[str, list[Any]]


@dataclass(frozen=True)
class Encoded:
    """One split's token columns (``input_ids``, ``labels``, ...), with what encoding left out or cut.

    ``dropped``: rows left out, by reason (e.g. empty text); ``truncated``: rows cut to ``max_length``;
    ``examples``: the source rows encoded, when a row may become several (question answering's windows).
    """

    columns: Rows
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    examples: int | None = None


@dataclass
class EvalContext:
    """What a task's evaluation may use; built by the engine for one split.

    ``forward`` runs the model on one collated batch (labels removed, except where the model needs them:
    seq2seq's decoder inputs) and returns ``Task.logits`` of its output ([batch, classes], or [batch, tokens,
    classes/vocab]; question answering [batch, tokens, 2]); ``batches`` yields collated batches of the split's
    rows in ``batching.eval_order``; ``generate`` (causal LM, seq2seq) maps input ids to generated token ids.
    """

    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    batches: Callable[[], Iterable[dict[str, torch.Tensor]]]
    split: Split
    label_names: list[str] | None
    tokenizer: Any = None
    generate: Callable[[list[list[int]], int], list[list[int]]] | None = None
    generation: Any = None  # spec.GenerationSpec
    final: bool = False  # the evaluation after training (generation metrics always run then)
    data: Any = None  # spec.DataSpec: what a task's decoding reads (question answering's n_best, ...)


class Task(ABC):
    """One supervised task. Instances are stateless; the registry holds one of each."""

    name: ClassVar[str]
    auto_class: ClassVar[str]  # transformers Auto class name, e.g. "AutoModelForSequenceClassification"
    peft_task_type: ClassVar[str]  # peft.TaskType value, e.g. "SEQ_CLS"
    metrics: ClassVar[dict[str, Direction]]  # what a study may optimise, with its default direction
    main_metric: ClassVar[str]  # what "best" means for references, retrain and the summary
    stratify: ClassVar[bool] = False  # stratified split by label (classification only)
    pools_on_pad: ClassVar[bool] = True  # the head reads the last non-pad token: the config needs a pad id
    token_labels: ClassVar[bool] = False  # labels sit on token positions ([batch, width], -100 where none)
    data_fields: ClassVar[frozenset[str]] = frozenset()  # DataSpec fields only some tasks read (others refuse them)
    layers_see_input: ClassVar[bool] = True  # every layer sees the input's positions (not so: a decoder of targets)

    # ---------------------------------------------------------------- study-file checks
    def check_data(self, data: DataSpec) -> list[Problem]:
        """Problems with the data section for this task (missing or unused fields)."""
        return []

    generates: ClassVar[bool] = False  # generation (training.generation) means something
    generation_metrics: ClassVar[tuple[str, ...]] = ()  # metrics of generated text: after training unless at_evals
    # what is checked on the study's own data and model before trial 0 (validate prints it): besides every task's
    # "every length fits the model's positions", the task's own invariants
    invariants: ClassVar[tuple[str, ...]] = ()
    # metrics that are a mean of one 0/1 score per example of the whole split: a difference is whole examples
    per_example: ClassVar[tuple[str, ...]] = ()

    def check_training(self, training: TrainingSpec, data: DataSpec) -> list[Problem]:
        """Training fields this task does not use with this data, written in the study file."""
        if "generation" in training.model_fields_set and not self.generates:
            return [
                Problem(
                    "training.generation",
                    training.generation.model_dump(),
                    f"model.task {self.name} generates no text; remove training.generation",
                )
            ]
        return []

    # ---------------------------------------------------------------- rows -> tokens
    @abstractmethod
    def columns(self, data: DataSpec) -> list[tuple[str, str]]:
        """(data field, source column) pairs this task reads; each column must be in every split."""

    @abstractmethod
    def select(self, rows: Rows, data: DataSpec, split: str, features: Any = None) -> Rows:
        """Normalise raw columns (texts as str, labels typed); raise ``UserError`` on unusable data.

        ``features`` are the source split's ``datasets.Features`` (class names of int labels).
        """

    def truncation(self, data: DataSpec) -> str:
        """What happens to a row longer than ``data.max_length`` (validate and the study say it)."""
        return "the end of the text is cut"

    def check_metric(self, data: DataSpec, metric: str) -> str | None:
        """Why ``metric`` cannot be optimised with this data, or None."""
        return None

    def label_names(self, train: Rows, data: DataSpec, class_names: list[str] | None = None) -> list[str] | None:
        """Class or tag names in id order (None for tasks without classes): ``data.label_names`` when given,
        else the source's ``ClassLabel`` names (``class_names``), else the names found in ``train``, sorted.
        """
        return None

    @abstractmethod
    def encode(self, rows: Rows, data: DataSpec, tokenizer: Any, label_names: list[str] | None, split: str) -> Encoded:
        """Token columns of one split (``input_ids``, ``labels``, ...), rows dropped and truncated."""

    def dedupe_key(self, rows: Rows, i: int) -> Any:
        """What makes two rows duplicates (by default every column but the label)."""
        return tuple(str(rows[c][i]) for c in rows if c != "label")

    # ---------------------------------------------------------------- model
    def config_kwargs(self, label_names: list[str] | None) -> dict[str, Any]:
        """Keyword arguments for ``AutoConfig.from_pretrained`` (labels, problem type)."""
        return {}

    def check_config(self, config: Any) -> str | None:
        """Why the model's config cannot serve this task (a decoder-only model for seq2seq...), or None."""
        return None

    def logits(self, output: Any) -> torch.Tensor:
        """What ``EvalContext.forward`` returns of the model's output: its ``logits`` (a task whose head returns
        other tensors, e.g. start and end logits, stacks them here).
        """
        return output.logits

    # ---------------------------------------------------------------- evaluation
    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """Metrics and ``eval_loss`` (plain loss, no orthogonal regularizer) over one split."""

    def generation_scores(self, ctx: EvalContext) -> dict[str, float]:
        """Metrics of generated text, computed after training (none for tasks that do not generate)."""
        return {}

    def trivial(self, splits: dict[str, Split], label_names: list[str] | None) -> dict[str, Any] | None:
        """The task's trivial predictor and its scores, the floor every result is read against: ``{"label": what it
        predicts, "validation": {metric: value}, "test": {...}, "shares": {class: share of validation}}`` (shares
        for classes only), or None where the task has none worth showing (a reference such as zero-shot is).
        """
        return None

    def perfect_prediction(self, split: Split) -> tuple[str, str] | None:
        """Invariant "a perfect prediction scores perfectly": the first (metric, target) of ``split`` for which the
        target scored against itself falls short of the metric's best value (the metric cannot read it), else None.
        Checked on the validation split before trial 0 (``search.runner.prepare_data``); tasks whose metrics are
        computed from label ids (classification, tags) pass by construction.
        """
        return None

    def chance_note(self, scores: dict[str, float], split: Split, label_names: list[str] | None) -> str | None:
        """Why ``scores`` on ``split`` are at chance level (the run learned nothing), else None.

        None as well for tasks without a chance level.
        """
        return None

    # ---------------------------------------------------------------- batches and generation
    def collate(self, split: Split, rows: Sequence[int], pad_id: int, width: int) -> dict[str, torch.Tensor]:
        """The batch of ``rows`` at ``width`` tokens: ``input_ids``, ``attention_mask`` [batch, width] and
        ``labels`` on the input's positions ([batch], or [batch, width] -100 padded); see ``batching.collate``.
        """
        return batching.collate(split, rows, pad_id, width)

    def generate(self, model: Any, prompts: list[list[int]], max_new_tokens: int, how: Generation) -> list[list[int]]:
        """Generations [n_new] for prompt ids (``how``: the study's decoding): a decoder's continuations
        (``batching``).
        """
        return batching.generate_continuations(model, prompts, max_new_tokens, how)

    def direction(self, metric: str) -> Direction:
        return self.metrics.get(metric, "minimize" if metric == "trainable_params" else "maximize")

    def loss_terms(self, batch: dict[str, Any]) -> int:
        """The terms a batch's mean training loss averages over (``labels`` [batch]: one per row). A trial on
        several processes weights each rank's loss by its share of them (train/distributed.py).
        """
        return int(batch["input_ids"].shape[0])

    def is_better(self, metric: str, new: float, old: float | None) -> bool:
        """True when ``new`` beats ``old`` for this metric."""
        if old is None:
            return True
        return new < old if self.direction(metric) == "minimize" else new > old


def label_config(label_names: list[str] | None) -> dict[str, Any]:
    """``num_labels``, ``id2label`` and ``label2id`` for a classification head (none before labels are known)."""
    if label_names is None:  # the model is only inspected (meta device): its default head will do
        return {}
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def id_names(feature: Any, data: DataSpec) -> list[str] | None:
    """Names of integer labels: the source's ``ClassLabel`` names, else ``data.label_names``, else None."""
    return getattr(feature, "names", None) or data.label_names


def named(value: Any, names: list[str] | None, data: DataSpec, split: str) -> Any:
    """An integer label or tag as its name (``id_names``); other values unchanged.

    Raises:
        UserError: an id outside the names.
    """
    if names is None or isinstance(value, bool) or not isinstance(value, int):
        return value
    if value == -1:  # datasets' and GLUE's "no label" (their test splits hide the labels)
        fix = (
            f"leave the split out with data.splits.{split}: null, or give a labelled {split} split"
            if split in ("validation", "test")
            else "drop the rows without a label from the data"
        )
        raise UserError(
            f"data.label_field = {data.label_field!r}: the {split} split has label -1, which datasets and GLUE use "
            f'for "no label" (a hidden test split): it cannot be trained on or scored; {fix}'
        )
    if not 0 <= value < len(names):
        raise UserError(
            f"data.label_field = {data.label_field!r}: the {split} split has label id {value}, but only ids "
            f"0..{len(names) - 1} are named ({names[:10]}); name every id in order in data.label_names"
        )
    return names[value]


def texts(values: list[Any]) -> list[str]:
    """A text column's cells as strings (None: empty)."""
    return ["" if v is None else str(v) for v in values]


def used_fields(data: DataSpec, wanted: set[str], task: str) -> list[Problem]:
    """Refuse data fields that were written in the study file but mean nothing for this task: those another task
    reads (``Task.data_fields``) and ``wanted`` (what this task reads in the data's form) does not.
    """
    from adalora_search.tasks import TASKS

    others = set().union(*(task.data_fields for task in TASKS.values()))
    return [
        Problem(
            f"data.{name}",
            getattr(data, name),
            f"not used by model.task {task}; remove it (this task reads {sorted(wanted)})",
        )
        for name in sorted(others & data.model_fields_set - wanted)
        if getattr(data, name) is not None  # written as null: not set
    ]


def imperfect(
    references: list[str],
    score: Callable[[list[str], list[str]], dict[str, float]],
    best: dict[str, float],
    sample: int = 200,
) -> tuple[str, str] | None:
    """The first (metric, reference) among the first ``sample`` references where ``score([ref], [ref])`` falls short
    of ``best`` (metric -> its best value), or None: a metric that cannot read a target scores even a perfect
    prediction below its best.
    """
    for reference in references[:sample]:
        if not any(ch.isalnum() for ch in reference):  # no word to read ("...", an emoji): no metric scores it
            continue
        scores = score([reference], [reference])
        for metric, value in best.items():
            if metric in scores and scores[metric] < value - 1e-9:
                return metric, reference
    return None

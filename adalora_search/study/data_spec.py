"""``data``: the source, its splits and the fields each task reads (a part of the study file, ``spec.py``).

Fields that only some tasks read are refused by the others (``tasks.base.used_fields``).
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from adalora_search.study.data_sources import Source
from adalora_search.study.frozen import Frozen


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


class DataSpec(Frozen):
    """``data``: the source, its splits and which fields the task reads (each task names its fields)."""

    source: Source = Field(description="a packaged dataset's name, or {type: packaged|hub|files|disk, ...}")
    splits: SplitNames = Field(default=SplitNames(), description="which source splits to use (defaults: by name)")
    text_fields: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description="classification/regression: one field, or two for sentence pairs; token_classification: "
        "the column of word lists; causal_lm: one plain-text column",
    )
    label_field: str = Field(default="label", description="class, score or tag-list column")
    label_names: list[str] | None = Field(
        default=None,
        min_length=1,
        description="names of integer labels or tags in id order (0, 1, ...), for data "
        "that stores ids without ClassLabel names, e.g. [O, B-PER, I-PER, B-LOC]",
    )
    prompt_field: str | None = Field(default=None, description="causal_lm: the prompt column")
    prompt_template: str | None = Field(
        default=None, description="causal_lm: a prompt built from columns, e.g. 'Headline: {headline}\nTopic:'"
    )
    response_field: str | None = Field(default=None, description="causal_lm: what the model learns to write")
    messages_field: str | None = Field(default=None, description="causal_lm: a column of chat turns {role, content}")
    system_turn: Literal["keep", "merge", "drop"] = Field(
        default="keep",
        description="causal_lm chats: keep system turns, merge their text into the first user turn "
        "(for chat templates that refuse a system role), or drop them",
    )
    use_chat_template: bool = Field(
        default=False, description="causal_lm: render prompt/response as a user and an assistant turn"
    )
    source_field: str | None = Field(default=None, description="seq2seq: the input text column (e.g. document)")
    target_field: str | None = Field(default=None, description="seq2seq: the output text column (e.g. summary)")
    source_prefix: str | None = Field(
        default=None, description="seq2seq: text put before every source, e.g. 'summarize: ' for T5"
    )
    max_target_length: int = Field(
        default=64, ge=2, le=8192, description="seq2seq: target tokens at most (longer targets are cut)"
    )
    question_field: str = Field(default="question", description="question_answering: the question column")
    context_field: str = Field(default="context", description="question_answering: the passage column")
    answers_field: str = Field(
        default="answers",
        description="question_answering: SQuAD's {text: [...], answer_start: [...]} column (character offsets)",
    )
    doc_stride: int = Field(
        default=32,
        ge=1,
        description="question_answering: tokens two windows of a long context share; < max_length",
    )
    n_best: int = Field(default=20, ge=1, description="question_answering: start and end candidates per window")
    max_answer_length: int = Field(default=30, ge=1, description="question_answering: answer tokens at most")
    version_2_with_negative: bool = Field(
        default=False, description="question_answering: SQuAD v2.0, some questions have no answer in the context"
    )
    null_score_diff_threshold: float = Field(
        default=0.0,
        description="question_answering v2: predict no answer when the null score beats the best span's by more",
    )
    split: SplitSpec | None = Field(
        default=None,
        description="carve validation (and test) rows out of the train "
        "split; omit when the source has a validation split",
    )
    deduplicate: bool = Field(default=True, description="remove repeated rows (validate counts them)")
    drop_blank_labels: bool = Field(default=False, description="drop rows whose label is empty instead of refusing")
    max_length: int = Field(default=128, ge=8, le=8192, description="tokens per row at most (longer rows are cut)")
    pad_to_multiple_of: int | None = Field(
        default=None, ge=1, description="pad each batch's width to a multiple of this (compiled trials: fewer shapes)"
    )
    max_train_samples: int | None = Field(
        default=None, ge=1, description="at most this many training rows, a random sample (default: all)"
    )
    max_eval_samples: int | None = Field(
        default=None,
        ge=1,
        description="at most this many validation rows, and test rows, a random sample (default: all)",
    )

    @field_validator("label_names")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            repeated = sorted({name for name in value if value.count(name) > 1})
            raise ValueError(f"label names must be distinct (one per id), but {repeated} repeat")
        return value

    @field_validator("source", mode="before", json_schema_input_type=Union[str, Source])
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"type": "packaged", "name": value} if isinstance(value, str) else value

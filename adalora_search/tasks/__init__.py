"""The task registry: ``model.task`` -> a ``Task``. Adding a task is one module and one line here."""

from __future__ import annotations

from adalora_search.tasks.base import Direction, Encoded, EvalContext, Task
from adalora_search.tasks.causal_lm import CausalLM
from adalora_search.tasks.question_answering import QuestionAnswering
from adalora_search.tasks.seq2seq import Seq2Seq
from adalora_search.tasks.sequence_classification import (
    Regression,
    SequenceClassification,
)
from adalora_search.tasks.token_classification import TokenClassification

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        SequenceClassification(),
        Regression(),
        TokenClassification(),
        CausalLM(),
        Seq2Seq(),
        QuestionAnswering(),
    )
}


def get_task(name: str) -> Task:
    """The registered task called ``name`` (the study file's ``model.task``)."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"model.task must be one of {sorted(TASKS)}, but got {name!r}") from None


__all__ = ["TASKS", "Direction", "Encoded", "EvalContext", "Task", "get_task"]

"""Token classification (``model.task: token_classification``), e.g. named entities.

Rows: ``text_fields: [tokens]`` names a column holding a list of words per row, ``label_field``
a list of tags (names, or ints with ``ClassLabel`` names) of the same length. ``input_ids``:
[n_tokens]; ``labels``: [n_tokens], the word's tag id on its first sub-token and -100 on the
other sub-tokens and special tokens (as in transformers' token-classification example).
Entity-level precision, recall and F1 come from ``seqeval``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from adalora_search.errors import Problem, UserError
from adalora_search.train.tasks.base import Direction, EvalContext, Rows, Task, label_config, used_fields

IGNORE = -100


class TokenClassification(Task):
    """One tag per word (e.g. named entities), scored per entity with seqeval."""

    name = "token_classification"
    auto_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    metrics: ClassVar[dict[str, Direction]] = {"f1": "maximize", "precision": "maximize", "recall": "maximize",
                                               "accuracy": "maximize", "eval_loss": "minimize"}
    main_metric = "f1"

    def check_data(self, data: Any) -> list[Problem]:
        problems = used_fields(data, {"text_fields", "label_field"}, self.name)
        if not data.text_fields or len(data.text_fields) != 1:
            problems.append(Problem("data.text_fields", data.text_fields, "token_classification reads one column "
                                    "holding a list of words per row, e.g. text_fields: [tokens]"))
        return problems

    def columns(self, data: Any) -> list[tuple[str, str]]:
        return [("text_fields", data.text_fields[0]), ("label_field", data.label_field)]

    def select(self, rows: Rows, data: Any, split: str, features: Any = None) -> Rows:
        words, tags = rows[data.text_fields[0]], rows[data.label_field]
        feature = features[data.label_field] if features is not None and data.label_field in features else None
        names = getattr(getattr(feature, "feature", None), "names", None)  # Sequence(ClassLabel): ids -> names
        for i, (w, t) in enumerate(zip(words, tags)):
            if not isinstance(w, list) or not isinstance(t, list) or len(w) != len(t):
                raise UserError(f"data.text_fields = {data.text_fields}: row {i} of the {split} split must hold "
                                f"a list of words and data.label_field {data.label_field!r} a list of tags of the "
                                f"same length; got {str(w)[:60]!r} and {str(t)[:60]!r}")
            if not w:
                raise UserError(f"data.text_fields = {data.text_fields}: row {i} of the {split} split has no words; "
                                "drop empty rows from the data")
            if any(x is None or (isinstance(x, str) and not x.strip()) for x in t):
                raise UserError(f"data.label_field = {data.label_field!r}: row {i} of the {split} split has a blank "
                                f"tag: {str(t)[:80]}; give every word a tag (e.g. O)")
        return {"tokens": [[str(x) for x in w] for w in words],
                "label": [[names[x] if names else str(x) for x in t] for t in tags]}

    def dedupe_key(self, rows: Rows, i: int) -> Any:
        return tuple(rows["tokens"][i])

    def label_names(self, train: Rows) -> list[str] | None:
        return sorted({str(tag) for tags in train["label"] for tag in tags})

    def encode(self, rows: Rows, data: Any, tokenizer: Any, label_names: list[str] | None,
               split: str) -> tuple[Rows, int]:
        if not getattr(tokenizer, "is_fast", False):
            raise UserError("model.name_or_path: token_classification needs a fast tokenizer (word alignment); "
                            "use a model that ships tokenizer.json")
        assert label_names is not None
        index = {name: i for i, name in enumerate(label_names)}
        encoded = tokenizer(rows["tokens"], is_split_into_words=True, truncation=True, max_length=data.max_length)
        labels = []
        for row, names in enumerate(rows["label"]):
            unknown = sorted(set(names) - set(index))
            if unknown:
                raise UserError(f"data.label_field = {data.label_field!r}: the {split} split has tags {unknown[:5]} "
                                f"that never occur in train ({label_names[:10]}); fix the data or the split")
            labels.append(align_labels(encoded.word_ids(row), [index[n] for n in names]))
        return {"input_ids": encoded["input_ids"], "labels": labels}, 0

    def config_kwargs(self, label_names: list[str] | None) -> dict[str, Any]:
        return label_config(label_names)

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        import torch
        from seqeval.metrics import f1_score, precision_score, recall_score

        names = ctx.label_names or []
        true, pred, loss, n = [], [], 0.0, 0
        for batch in ctx.batches():
            target = batch.pop("labels")
            logits = ctx.forward(batch).float().cpu()
            keep = target != IGNORE
            loss += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            n += int(keep.sum())
            guess = logits.argmax(-1)
            for row in range(len(target)):
                true.append([names[int(t)] for t in target[row][keep[row]]])
                pred.append([names[int(p)] for p in guess[row][keep[row]]])
        correct = sum(a == b for t, p in zip(true, pred) for a, b in zip(t, p))
        return {"f1": float(f1_score(true, pred, zero_division=0)),
                "precision": float(precision_score(true, pred, zero_division=0)),
                "recall": float(recall_score(true, pred, zero_division=0)),
                "accuracy": correct / max(n, 1), "eval_loss": loss / max(n, 1)}


def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """[n_tokens] labels: a word's tag on its first sub-token, -100 elsewhere (special tokens too)."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE if word is None or word == previous else tags[word])
        previous = word
    return out

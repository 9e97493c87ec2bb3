"""Token classification (``model.task: token_classification``), e.g. named entities.

Rows: ``text_fields: [tokens]`` names a column holding a list of words per row, ``label_field``
a list of tags of the same length: names, or integer ids named by the source's ``ClassLabel``
feature or by ``data.label_names`` (ids with no names are refused). Tags must be entity tags that
seqeval reads: ``O`` or a ``B-``/``I-``/``E-``/``S-``/``L-``/``U-`` prefix and a type (IOB1, IOB2,
IOE, IOBES, BILOU; BILOU's ``L-``/``U-`` are scored as IOBES's ``E-``/``S-``), with at least one
entity in train; anything else would make entity F1 constantly 0. ``input_ids``: [n_tokens];
``labels``: [n_tokens], the word's tag id on its first sub-token and -100 on the other sub-tokens
and special tokens (as in transformers' token-classification example).
Entity-level precision, recall and F1 come from ``seqeval``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from adalora_search.errors import DataRowError, Problem, UserError
from adalora_search.tasks.base import (
    Direction,
    Encoded,
    EvalContext,
    Rows,
    Task,
    id_names,
    label_config,
    named,
    used_fields,
)

IGNORE = -100
ENTITY_TAG = re.compile(r"^(O|[BIESLU](-.+)?)$")  # what seqeval reads as a chunk tag (prefix form)


class TokenClassification(Task):
    """One tag per word (e.g. named entities), scored per entity with seqeval."""

    name = "token_classification"
    token_labels = True
    invariants = ("every tag lands on its word", "the validation split has entities (F1 can be above 0)")
    auto_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    metrics: ClassVar[dict[str, Direction]] = {
        "f1": "maximize",
        "precision": "maximize",
        "recall": "maximize",
        "accuracy": "maximize",
        "eval_loss": "minimize",
    }
    main_metric = "f1"
    data_fields = frozenset({"text_fields", "label_field", "label_names"})

    def loss_terms(self, batch: dict[str, Any]) -> int:
        """Tokens with a label (labels [batch, width], -100 where no loss is taken)."""
        return int((batch["labels"] != -100).sum())

    def check_data(self, data: Any) -> list[Problem]:
        problems = used_fields(data, {"text_fields", "label_field", "label_names"}, self.name)
        if not data.text_fields or len(data.text_fields) != 1:
            problems.append(
                Problem(
                    "data.text_fields",
                    data.text_fields,
                    "token_classification reads one column holding a list of words per row, e.g. text_fields: [tokens]",
                )
            )
        return problems

    def truncation(self, data: Any) -> str:
        return "words past the limit get no label and are not scored"

    def columns(self, data: Any) -> list[tuple[str, str]]:
        return [("text_fields", data.text_fields[0]), ("label_field", data.label_field)]

    def select(self, rows: Rows, data: Any, split: str, features: Any = None) -> Rows:
        words, tags = rows[data.text_fields[0]], rows[data.label_field]
        feature = features[data.label_field] if features is not None and data.label_field in features else None
        names = id_names(getattr(feature, "feature", None), data)  # List(ClassLabel) names, else data.label_names
        for i, (w, t) in enumerate(zip(words, tags)):
            if not isinstance(w, list) or not isinstance(t, list) or len(w) != len(t):
                raise DataRowError(
                    i,
                    f"data.text_fields = {data.text_fields}: {{row}} must hold a list of words and "
                    f"data.label_field {data.label_field!r} a list of tags of the same length; got "
                    f"{str(w)[:60]!r} and {str(t)[:60]!r}",
                    split,
                )
            if not w:
                raise DataRowError(
                    i,
                    f"data.text_fields = {data.text_fields}: {{row}} has no words; drop empty rows from the data",
                    split,
                )
            if any(x is None or (isinstance(x, str) and not x.strip()) for x in t):
                raise DataRowError(
                    i,
                    f"data.label_field = {data.label_field!r}: {{row}} has a blank tag: "
                    f"{str(t)[:80]}; give every word a tag (e.g. O)",
                    split,
                )
        if names is None and any(isinstance(x, int) for t in tags for x in t):
            raise UserError(
                f"data.label_field = {data.label_field!r}: the {split} split stores tags as integer ids "
                f"(e.g. {tags[0][:8]}) and the data names none of them (no ClassLabel feature); list the "
                "names in id order with data.label_names, e.g. [O, B-PER, I-PER, B-LOC, I-LOC]"
            )
        labels = [[str(named(x, names, data, split)) for x in t] for t in tags]
        _check_scheme(labels, data, split)
        return {"tokens": [[str(x) for x in w] for w in words], "label": labels}

    def dedupe_key(self, rows: Rows, i: int) -> Any:
        return tuple(rows["tokens"][i])

    def label_names(self, train: Rows, data: Any, class_names: list[str] | None = None) -> list[str] | None:
        names = list(data.label_names or class_names or sorted({tag for tags in train["label"] for tag in tags}))
        if all(tag == "O" for tags in train["label"] for tag in tags):
            raise UserError(
                f"data.label_field = {data.label_field!r}: every tag of the train split is O (no entity), "
                "so entity F1, precision and recall are 0 for every trial; check the tags"
            )
        return names

    def encode(self, rows: Rows, data: Any, tokenizer: Any, label_names: list[str] | None, split: str) -> Encoded:
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                "model.name_or_path: token_classification needs a fast tokenizer (word alignment); "
                "use a model that ships tokenizer.json"
            )
        assert label_names is not None
        if split == "validation" and all(tag == "O" for tags in rows["label"] for tag in tags):
            raise UserError(
                f"data.label_field = {data.label_field!r}: the validation split has no entity (every tag "
                "is O), so entity F1, precision and recall would be 0 for every trial; give it rows with "
                "entities (a larger data.split.validation, or another validation split)"
            )
        index = {name: i for i, name in enumerate(label_names)}
        encoded = tokenizer(rows["tokens"], is_split_into_words=True, truncation=True, max_length=data.max_length)
        labels, truncated = [], 0
        where = "are not in data.label_names" if data.label_names else "never occur in train"
        for row, names in enumerate(rows["label"]):
            unknown = sorted(set(names) - set(index))
            if unknown:
                raise UserError(
                    f"data.label_field = {data.label_field!r}: the {split} split has tags {unknown[:5]} "
                    f"that {where} ({label_names[:10]}); fix the data, the split or the names"
                )
            word_ids = encoded.word_ids(row)
            seen = {w for w in word_ids if w is not None}
            truncated += max(seen, default=-1) < len(names) - 1  # words cut at max_length
            lost = [w for w in range(max(seen, default=-1)) if w not in seen and names[w] != "O"]
            if lost:  # invariant: every tag lands on its word; one the tokenizer makes no token of loses its entity
                w = lost[0]
                raise UserError(
                    f"data.text_fields = {data.text_fields!r}: row {row + 1} of the {split} split has the word "
                    f"{rows['tokens'][row][w]!r} (tag {names[w]}) that the tokenizer turns into no token at all, so "
                    f"its tag would land nowhere and the entity would change; {len(lost)} such tag(s) in that row. "
                    "Remove empty or invisible words (zero-width spaces, control characters) from the word lists"
                )
            labels.append(align_labels(word_ids, [index[n] for n in names]))
        return Encoded({"input_ids": encoded["input_ids"], "labels": labels}, {}, truncated)

    def config_kwargs(self, label_names: list[str] | None) -> dict[str, Any]:
        return label_config(label_names)

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        import torch
        from seqeval.metrics import f1_score, precision_score, recall_score

        names = [_seqeval_tag(name) for name in ctx.label_names or []]
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
        return {
            "f1": float(f1_score(true, pred, zero_division=0)),
            "precision": float(precision_score(true, pred, zero_division=0)),
            "recall": float(recall_score(true, pred, zero_division=0)),
            "accuracy": correct / max(n, 1),
            "eval_loss": loss / max(n, 1),
        }


def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """[n_tokens] labels: a word's tag on its first sub-token, -100 elsewhere (special tokens too)."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE if word is None or word == previous else tags[word])
        previous = word
    return out


def _check_scheme(labels: list[list[str]], data: Any, split: str) -> None:
    """Refuse tags seqeval does not read as entity tags (it would score every trial's F1 as 0)."""
    bad = sorted({tag for tags in labels for tag in tags if not ENTITY_TAG.match(tag)})
    if not bad:
        return
    hint = (
        "; they look like ids: store them as integers and name them in id order with data.label_names"
        if all(tag.isdigit() for tag in bad)
        else ""
    )
    raise UserError(
        f"data.label_field = {data.label_field!r}: the {split} split has tags {bad[:6]} that are not "
        "entity tags seqeval reads (O, or B-, I-, E-, S-, L-, U- and a type, as in IOB2, IOBES or "
        f"BILOU: B-PER, I-LOC){hint}"
    )


def _seqeval_tag(tag: str) -> str:
    """BILOU's last/unit tags as IOBES's end/single ones, which seqeval's default mode reads."""
    return {"L": "E", "U": "S"}.get(tag[:1], tag[:1]) + tag[1:] if tag[:1] in "LU" else tag

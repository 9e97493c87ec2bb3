"""Extractive question answering in SQuAD's format (``model.task: question_answering``).

Rows: ``data.question_field``, ``data.context_field`` and ``data.answers_field`` (SQuAD's
``{text: [...], answer_start: [...]}``, character offsets into the context; a list of ``{text, answer_start}``
is read too). Every answer is checked against its context at ``answer_start`` before anything is trained: a
mismatch is refused with the count and the first row (a wrong offset trains on wrong spans silently).

Encoding follows transformers' ``run_qa`` (``prepare_train_features`` / ``prepare_validation_features``): the
question, then the context, cut into windows of ``max_length`` tokens that share ``doc_stride`` tokens, with the
tokenizer's offset mapping. ``input_ids``: [n_tokens] per window; ``labels``: the window's [start, end] token of
the first answer, or the CLS token's position when the window does not hold it (or the question has none).
Evaluation windows also keep their example, the context offsets of their tokens and the gold answers.
Decoding (``data.n_best``, ``max_answer_length``, SQuAD v2.0's ``version_2_with_negative`` and
``null_score_diff_threshold``) is ``run_qa``'s ``postprocess_qa_predictions``; metrics are SQuAD's (``squad``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from adalora_search.errors import DataRowError, Problem, UserError
from adalora_search.tasks import batching
from adalora_search.tasks.base import Direction, Encoded, EvalContext, Rows, Task, imperfect, used_fields
from adalora_search.tasks.squad import squad_scores

if TYPE_CHECKING:
    import numpy as np
    import torch

    from adalora_search.train.data import Split

FIELDS = {
    "question_field",
    "context_field",
    "answers_field",
    "doc_stride",
    "n_best",
    "max_answer_length",
    "version_2_with_negative",
    "null_score_diff_threshold",
}
DROPPED_NO_ROOM = "question too long: no room for doc_stride context tokens in max_length"
NO_OFFSET = [-1, -1]  # a token outside the context (question, special tokens)


class QuestionAnswering(Task):
    """An answer span in the context for each question (SQuAD v1.1, and v2.0's unanswerable questions)."""

    name = "question_answering"
    auto_class = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    metrics: ClassVar[dict[str, Direction]] = {"f1": "maximize", "exact_match": "maximize", "eval_loss": "minimize"}
    main_metric = "f1"
    per_example = ("exact_match",)  # per question (the split's examples, not its windows)
    invariants = (
        "every answer is at answer_start in its context (trimmed of the whitespace beside it)",
        "a perfect prediction scores perfectly (SQuAD exact match and F1 of the gold answers)",
    )
    data_fields = frozenset(FIELDS)

    # ---------------------------------------------------------------- checks
    def check_data(self, data: Any) -> list[Problem]:
        problems = used_fields(data, set(self.data_fields), self.name)
        if data.doc_stride >= data.max_length:
            problems.append(
                Problem(
                    "data.doc_stride",
                    data.doc_stride,
                    f"must be < data.max_length ({data.max_length}): it is the overlap of two windows of a long "
                    "context; e.g. a quarter of max_length",
                )
            )
        if data.question_field == data.context_field:
            problems.append(Problem("data.context_field", data.context_field, "is the question_field too"))
        return problems

    def truncation(self, data: Any) -> str:
        return f"the context is read in windows of max_length tokens sharing {data.doc_stride}; no text is lost"

    def columns(self, data: Any) -> list[tuple[str, str]]:
        return [
            ("question_field", data.question_field),
            ("context_field", data.context_field),
            ("answers_field", data.answers_field),
        ]

    # ---------------------------------------------------------------- rows
    def select(self, rows: Rows, data: Any, split: str, features: Any = None) -> Rows:
        questions = [str(q or "").strip() for q in rows[data.question_field]]
        contexts = [str(c or "") for c in rows[data.context_field]]
        answers = [_answers(a, data.answers_field, split, i) for i, a in enumerate(rows[data.answers_field])]
        _check_rows(questions, contexts, answers, data, split)
        answers = [[_trimmed(t, s) for t, s in a] for a in answers]
        return {
            "question": questions,
            "context": contexts,
            "answer_text": [[t for t, _ in a] for a in answers],
            "answer_start": [[s for _, s in a] for a in answers],
        }

    def dedupe_key(self, rows: Rows, i: int) -> Any:
        return rows["question"][i], rows["context"][i]

    def encode(self, rows: Rows, data: Any, tokenizer: Any, label_names: list[str] | None, split: str) -> Encoded:
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                f"model.name_or_path: {type(tokenizer).__name__} is a slow tokenizer; question answering needs "
                "a fast one (offset mappings); use a model with a tokenizer.json, or model.tokenizer"
            )
        room = data.max_length - tokenizer.num_special_tokens_to_add(pair=True) - data.doc_stride
        lengths = [len(ids) for ids in tokenizer(rows["question"], add_special_tokens=False)["input_ids"]]
        kept = [i for i, n in enumerate(lengths) if n < room]
        if not kept:
            raise UserError(
                f"data.max_length = {data.max_length}: no question of the {split} split leaves room for "
                f"doc_stride ({data.doc_stride}) context tokens; raise max_length or lower doc_stride"
            )
        enc = tokenizer(
            [rows["question"][i] for i in kept],
            [rows["context"][i] for i in kept],
            truncation="only_second",
            max_length=data.max_length,
            stride=data.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        columns = _windows(enc, kept, rows, tokenizer, evaluation=split != "train")
        dropped = len(rows["question"]) - len(kept)
        long = sum(n > 1 for n in Counter(enc["overflow_to_sample_mapping"]).values())  # read in several windows
        return Encoded(columns, {DROPPED_NO_ROOM: dropped} if dropped else {}, long, examples=len(kept))

    def perfect_prediction(self, split: Split) -> tuple[str, str] | None:
        answers = [a for a in split.columns.get("answers", []) if a]  # per window: the question's gold answers
        return imperfect(
            [a[0] for a in answers], lambda p, r: squad_scores(p, [[r[0]]]), {"exact_match": 1.0, "f1": 1.0}
        )

    # ---------------------------------------------------------------- batches
    def collate(self, split: Split, rows: Sequence[int], pad_id: int, width: int) -> dict[str, torch.Tensor]:
        """The windows' inputs [batch, width] and ``start_positions`` / ``end_positions`` [batch] (the model's
        names for the answer's first and last token).
        """
        import torch

        batch = batching.inputs(split, rows, pad_id, width)
        labels = torch.tensor([split.columns["labels"][i] for i in rows], dtype=torch.long)
        return {**batch, "start_positions": labels[:, 0], "end_positions": labels[:, 1]}

    def logits(self, output: Any) -> torch.Tensor:
        """Start and end logits stacked: [batch, tokens, 2]."""
        import torch

        return torch.stack([output.start_logits, output.end_logits], dim=-1)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """``eval_loss`` (mean of the start and end cross-entropies per window, as the model's loss) and SQuAD's
        ``exact_match`` / ``f1`` over the split's questions.
        """
        import torch

        order = iter(batching.eval_order(ctx.split).tolist())
        loss, scores = 0.0, {}
        for batch in ctx.batches():
            start, end = batch.pop("start_positions"), batch.pop("end_positions")
            logits = ctx.forward(batch).float().cpu()
            ce = torch.nn.functional.cross_entropy
            loss += float(ce(logits[..., 0], start, reduction="sum") + ce(logits[..., 1], end, reduction="sum")) / 2
            for row, window in zip([next(order) for _ in range(len(start))], logits.numpy()):
                scores[row] = window[: len(ctx.split.columns["input_ids"][row])]
        predictions, gold = _predict(ctx.split, scores, ctx.data)
        return {"eval_loss": loss / max(len(ctx.split), 1), **squad_scores(predictions, gold)}


def _answers(value: Any, field: str, split: str, row: int) -> list[tuple[str, int]]:
    """One row's answers as (text, answer_start) pairs, from SQuAD's dict of lists or a list of dicts."""
    if isinstance(value, list) and all(isinstance(a, dict) for a in value):
        value = {"text": [a.get("text") for a in value], "answer_start": [a.get("answer_start") for a in value]}
    if isinstance(value, dict) and isinstance(value.get("text"), list) and isinstance(value.get("answer_start"), list):
        texts, starts = value["text"], value["answer_start"]
        if len(texts) == len(starts) and all(isinstance(t, str) for t in texts):
            if all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in starts):
                return list(zip(texts, starts))
    raise DataRowError(
        row,
        f"data.answers_field = {field!r}: {{row}} is not SQuAD's answers: {str(value)[:120]}; each row must be "
        "{text: [answer, ...], answer_start: [character offset, ...]} with one offset (an int >= 0) per text",
        split,
    )


def _trimmed(text: str, start: int) -> tuple[str, int]:
    """The answer without the whitespace an annotation tool kept beside it, ``answer_start`` moved past what was
    cut: a span taken with the space would label the neighbouring word's token too (the metric strips it).
    """
    return text.strip(), start + len(text) - len(text.lstrip())


def _check_rows(
    questions: list[str], contexts: list[str], answers: list[list[tuple[str, int]]], data: Any, split: str
) -> None:
    """Refuse rows that would train on a wrong span, or read swapped fields: count and first row of each kind.

    Raises:
        UserError: an answer not at ``answer_start`` in its context; a row without an answer when
            ``version_2_with_negative`` is off; a context shorter than its question (or empty).
    """
    checks = [
        (
            "answers_field",
            lambda i: any(contexts[i][s : s + len(t)] != t or not t.strip() for t, s in answers[i]),
            "an answer whose text is not the context's at answer_start",
            "answer_start must be the answer's 0-based character offset in the context (not a byte, token or "
            "1-based offset); fix the offsets or drop those rows",
        ),
        (
            "answers_field",
            lambda i: not data.version_2_with_negative and not answers[i],
            "no answer",
            "set data.version_2_with_negative: true for SQuAD v2.0 questions that have no answer, or drop them",
        ),
        (
            "context_field",
            lambda i: len(contexts[i].strip()) <= len(questions[i]),
            "a context no longer than its question",
            f"check that data.context_field ({data.context_field!r}) names the passage and "
            f"data.question_field ({data.question_field!r}) the question, or drop those rows",
        ),
    ]
    for field, bad, what, fix in checks:
        rows = [i for i in range(len(questions)) if bad(i)]
        if rows:
            i = rows[0]
            shown = {"question": questions[i][:80], "context": contexts[i][:80], "answers": answers[i][:2]}
            raise UserError(
                f"data.{field} = {getattr(data, field)!r}: {len(rows)} of {len(questions)} rows of the {split} "
                f"split have {what}; first, row {i}: {shown}; {fix}"
            )


def _windows(enc: Any, kept: list[int], rows: Rows, tokenizer: Any, evaluation: bool) -> Rows:
    """Per window: ``input_ids`` (and ``token_type_ids``), ``labels`` [start, end]; for evaluation also the
    ``example`` (row index), context ``offsets`` ([-1, -1] outside the context), ``context`` and ``answers``.
    """
    out: Rows = defaultdict(list)
    for w, ids in enumerate(enc["input_ids"]):
        row = kept[enc["overflow_to_sample_mapping"][w]]
        sequence = enc.sequence_ids(w)
        offsets = [list(o) if sequence[k] == 1 else NO_OFFSET for k, o in enumerate(enc["offset_mapping"][w])]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        out["input_ids"].append(ids)
        if "token_type_ids" in enc:
            out["token_type_ids"].append(enc["token_type_ids"][w])
        out["labels"].append(_span(offsets, rows["answer_text"][row], rows["answer_start"][row], cls))
        if evaluation:
            out["example"].append(row)
            out["offsets"].append(offsets)
            out["context"].append(rows["context"][row])
            out["answers"].append(rows["answer_text"][row])
    return dict(out)


def _span(offsets: list[list[int]], texts: list[str], starts: list[int], cls: int) -> list[int]:
    """The first answer's [start, end] tokens in this window, or [cls, cls] when the window does not hold it."""
    if not texts:
        return [cls, cls]
    first, last = starts[0], starts[0] + len(texts[0])
    inside = [k for k, (a, b) in enumerate(offsets) if (a, b) != (-1, -1)]
    if not inside or offsets[inside[0]][0] > first or offsets[inside[-1]][1] < last:
        return [cls, cls]
    start = max(k for k in inside if offsets[k][0] <= first)
    end = min(k for k in inside if offsets[k][1] >= last)
    return [start, end]


def _predict(split: Split, scores: dict[int, np.ndarray], data: Any) -> tuple[list[str], list[list[str]]]:
    """Each question's answer text (``run_qa``'s ``postprocess_qa_predictions``) and its gold answers."""
    import numpy as np

    by_example: dict[int, list[int]] = defaultdict(list)
    for w, example in enumerate(split.columns["example"]):
        by_example[example].append(w)
    predictions, gold = [], []
    for windows in by_example.values():
        best, best_score, null = "", -np.inf, np.inf
        for w in windows:
            logits, offsets = scores[w], split.columns["offsets"][w]
            null = min(null, float(logits[0, 0] + logits[0, 1]))  # the CLS token: run_qa's null score
            starts = np.argsort(logits[:, 0])[::-1][: data.n_best]
            ends = np.argsort(logits[:, 1])[::-1][: data.n_best]
            for s in starts:
                for e in ends:
                    if offsets[s] == NO_OFFSET or offsets[e] == NO_OFFSET or not 0 <= e - s < data.max_answer_length:
                        continue
                    score = float(logits[s, 0] + logits[e, 1])
                    if score > best_score:
                        best, best_score = split.columns["context"][w][offsets[s][0] : offsets[e][1]], score
        if data.version_2_with_negative and null - best_score > data.null_score_diff_threshold:
            best = ""
        predictions.append(best)
        gold.append(split.columns["answers"][windows[0]])
    return predictions, gold

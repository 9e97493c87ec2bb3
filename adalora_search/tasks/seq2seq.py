"""Text-to-text generation with an encoder-decoder model (``model.task: seq2seq``): summarization, headline
generation, translation.

Rows: ``data.source_field`` (with ``data.source_prefix`` before it, e.g. T5's ``"summarize: "``) and
``data.target_field``. ``input_ids``: the source's tokens [n_src <= max_length]; ``labels``: the target's
[n_tgt <= max_target_length], as the tokenizer marks a target (``text_target``; its end token kept), padded
with -100 in a batch of their own width: the model builds its decoder inputs from them (teacher forcing).
Evaluation: ``eval_loss`` (mean cross-entropy per target token, teacher-forced) and, from generated text
(``training.generation``: beams, length penalty, new tokens; after training, or at every evaluation with
``at_evals``), ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures with the Porter stemmer (``rouge_score``,
as the AdaLoRA paper's Table 3 and transformers' ``run_summarization`` report them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from adalora_search.errors import Problem, UserError
from adalora_search.tasks import batching
from adalora_search.tasks.base import Direction, Encoded, EvalContext, Rows, Task, imperfect, texts, used_fields
from adalora_search.tasks.batching import Generation

if TYPE_CHECKING:
    import torch

    from adalora_search.train.data import Split

IGNORE = -100
ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")
DROPPED_EMPTY = "empty source or target"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Seq2Seq(Task):
    """An encoder-decoder model writes the target from the source (T5, BART, mT5, Pegasus...)."""

    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    metrics: ClassVar[dict[str, Direction]] = {"eval_loss": "minimize", **dict.fromkeys(ROUGE, "maximize")}
    main_metric = "eval_loss"
    data_fields = frozenset({"source_field", "target_field", "source_prefix", "max_target_length"})
    pools_on_pad = False
    token_labels = False  # labels are the target's tokens, not the input's positions
    layers_see_input = False  # the decoder's layers see the target's positions
    generates = True
    invariants = ("a perfect prediction scores perfectly (ROUGE of the validation targets against themselves)",)
    generation_metrics = ROUGE

    # ---------------------------------------------------------------- checks
    def check_config(self, config: Any) -> str | None:
        if not getattr(config, "is_encoder_decoder", False):
            return (
                f"{config.model_type} is not an encoder-decoder model; model.task seq2seq needs one such as T5 or "
                "BART (for a decoder-only model use model.task: causal_lm with prompt_field and response_field)"
            )
        return None

    def check_data(self, data: Any) -> list[Problem]:
        problems = used_fields(data, set(self.data_fields), self.name)
        for name, example in (("source_field", "document"), ("target_field", "summary")):
            if getattr(data, name) is None:
                problems.append(
                    Problem(f"data.{name}", None, f"model.task seq2seq reads it; name the column, e.g. {example}")
                )
        if data.source_field is not None and data.source_field == data.target_field:
            problems.append(
                Problem("data.target_field", data.target_field, "is the source_field too; name the output column")
            )
        return problems

    def truncation(self, data: Any) -> str:
        return "the end of the source is cut at max_length tokens, the end of the target at max_target_length"

    def columns(self, data: Any) -> list[tuple[str, str]]:
        return [("source_field", data.source_field), ("target_field", data.target_field)]

    # ---------------------------------------------------------------- rows
    def select(self, rows: Rows, data: Any, split: str, features: Any = None) -> Rows:
        out = {"source": texts(rows[data.source_field]), "target": texts(rows[data.target_field])}
        for key, field in (("source", "source_field"), ("target", "target_field")):
            if out[key] and not any(text.strip() for text in out[key]):
                raise UserError(
                    f"data.{field} = {getattr(data, field)!r}: every value of the {split} split is empty; "
                    f"point {field} at the column that holds the {key} text"
                )
        return out

    def dedupe_key(self, rows: Rows, i: int) -> Any:
        return rows["source"][i], rows["target"][i]

    def encode(self, rows: Rows, data: Any, tokenizer: Any, label_names: list[str] | None, split: str) -> Encoded:
        kept = [i for i, (s, t) in enumerate(zip(rows["source"], rows["target"])) if s.strip() and t.strip()]
        sources = [(data.source_prefix or "") + rows["source"][i] for i in kept]
        targets = [rows["target"][i] for i in kept]
        source_ids = _cut(tokenizer, sources, data.max_length, target=False)
        target_ids = _cut(tokenizer, targets, data.max_target_length, target=True)
        columns = {
            "input_ids": [ids for ids, _ in source_ids],
            "labels": [ids for ids, _ in target_ids],
            "reference": targets,
        }
        truncated = sum(a or b for (_, a), (_, b) in zip(source_ids, target_ids))
        dropped = len(rows["source"]) - len(kept)
        return Encoded(columns, {DROPPED_EMPTY: dropped} if dropped else {}, truncated)

    # ---------------------------------------------------------------- batches and generation
    def collate(self, split: Split, rows: Sequence[int], pad_id: int, width: int) -> dict[str, torch.Tensor]:
        """``input_ids``/``attention_mask`` [batch, width] (the source) and ``labels`` [batch, longest target]
        padded with -100: the model shifts them right into its decoder inputs.
        """
        batch = batching.inputs(split, rows, pad_id, width)
        labels = [split.columns["labels"][i] for i in rows]
        batch["labels"] = batching.pad(labels, max(len(x) for x in labels), IGNORE)
        return batch

    def loss_terms(self, batch: dict[str, Any]) -> int:
        """Target tokens (the labels are not shifted against the input: the decoder's inputs are)."""
        return int((batch["labels"] != IGNORE).sum())

    def generate(self, model: Any, prompts: list[list[int]], max_new_tokens: int, how: Generation) -> list[list[int]]:
        """The decoder's output [n_new] for each source: its start token dropped, cut at the end token."""
        import torch

        out: list[list[int]] = []
        ends = how.ends(model)
        for i in range(0, len(prompts), how.batch_size):
            chunk = prompts[i : i + how.batch_size]
            width = max(len(p) for p in chunk)
            ids = batching.pad(chunk, width, how.pad_id).to(how.device)
            mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in chunk], device=how.device)
            with torch.autocast(how.device.type, dtype=torch.bfloat16, enabled=how.autocast):
                generated = model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **how.kwargs()
                )
            out += [batching.until_end(row, ends) for row in generated[:, 1:].tolist()]
        return out

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        import torch

        loss, n = 0.0, 0
        for batch in ctx.batches():
            target = batch["labels"]  # kept in the batch: the decoder's inputs are built from it
            logits = ctx.forward(batch)
            loss += float(
                torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(),
                    target.to(logits.device).flatten(),
                    ignore_index=IGNORE,
                    reduction="sum",
                )
            )
            n += int((target != IGNORE).sum())
        scores = {"eval_loss": loss / max(n, 1)}
        spec = ctx.generation
        if ctx.generate is not None and spec is not None and (ctx.final or spec.at_evals):
            scores.update(self.generation_scores(ctx))
        return scores

    def perfect_prediction(self, split: Split) -> tuple[str, str] | None:
        # ROUGE-1 tells whether the words are read; ROUGE-2 of a one-word target is 0 even against itself
        return imperfect(split.columns.get("reference", []), rouge, {"rouge1": 1.0, "rougeL": 1.0})

    def generation_scores(self, ctx: EvalContext) -> dict[str, float]:
        """ROUGE of the generations for the first ``training.generation.max_samples`` rows of the split."""
        if ctx.generate is None or ctx.generation is None:
            return {}
        rows = list(range(min(len(ctx.split), ctx.generation.max_samples)))
        if not rows:
            return {}
        outputs = ctx.generate([ctx.split.columns["input_ids"][i] for i in rows], ctx.generation.max_new_tokens)
        generated = [ctx.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
        return rouge(generated, [ctx.split.columns["reference"][i] for i in rows])


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measures (0..1) with the Porter stemmer (``rouge_score``), words of any script
    (``text_metrics.UnicodeTokenizer``).

    ROUGE-Lsum reads sentences as lines: each text is split after ``.``, ``!`` or ``?`` (transformers'
    ``run_summarization`` uses NLTK's sentence splitter for the same purpose; its model needs a download).
    """
    from adalora_search.tasks.text_metrics import scorer as rouge_scorer

    scorer = rouge_scorer(list(ROUGE), use_stemmer=True)
    totals = dict.fromkeys(ROUGE, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(_lines(reference), _lines(prediction))
        for key in ROUGE:
            totals[key] += scores[key].fmeasure
    n = max(len(references), 1)
    return {key: totals[key] / n for key in ROUGE}


def _lines(text: str) -> str:
    return "\n".join(_SENTENCE_END.split(text.strip()))


def _cut(tokenizer: Any, texts: list[str], max_length: int, target: bool) -> list[tuple[list[int], bool]]:
    """Each text's ids within ``max_length`` (the tokenizer's truncation: its special tokens kept), and whether
    it was cut.
    """
    key = "text_target" if target else "text"
    if not texts:
        return []
    full = tokenizer(**{key: texts})["input_ids"]
    long = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if long:
        cut = tokenizer(**{key: [texts[i] for i in long]}, truncation=True, max_length=max_length)["input_ids"]
        for i, ids in zip(long, cut):
            full[i] = ids
    long_set = set(long)
    return [(list(ids), i in long_set) for i, ids in enumerate(full)]

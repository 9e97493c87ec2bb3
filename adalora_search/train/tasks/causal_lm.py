"""Causal language modelling / supervised fine-tuning (``model.task: causal_lm``).

Three row forms (``data``):

- ``prompt_field`` or ``prompt_template`` (``{column}`` placeholders) + ``response_field``: the
  loss is on the response tokens only (plus EOS); with ``use_chat_template: true`` the pair is
  rendered as a user turn and an assistant turn with the tokenizer's chat template;
- ``messages_field``: a list of ``{role, content}`` rendered with the chat template, the loss on
  assistant turns only (the end-of-turn marker included, so the model learns to stop);
- ``text_fields: [text]``: plain text, the loss on every token.

``input_ids`` and ``labels``: [n_tokens] per row, -100 where no loss is taken. Truncation keeps
the response: when a row is longer than ``max_length``, the **start of the prompt** is cut (the
tokens next to the response are kept); rows whose response alone is longer are dropped and
counted. Evaluation: ``eval_loss`` (mean cross-entropy per response token) and ``perplexity``
(its exponential); with references, greedy generation from the prompt on a capped sample gives
``exact_match`` (SQuAD-style normalised) and ``rouge_l`` (``rouge_score``'s F-measure).
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, ClassVar

from adalora_search.errors import Problem, UserError
from adalora_search.train.tasks.base import Direction, EvalContext, Rows, Task, used_fields

IGNORE = -100
GENERATION_METRICS = ("exact_match", "rouge_l")


class CausalLM(Task):
    """Supervised fine-tuning of a decoder LLM: loss on responses, generation metrics."""

    name = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    metrics: ClassVar[dict[str, Direction]] = {"eval_loss": "minimize", "perplexity": "minimize",
                                               "exact_match": "maximize", "rouge_l": "maximize"}
    main_metric = "eval_loss"
    pools_on_pad = False
    generates = True

    # ---------------------------------------------------------------- checks
    def check_data(self, data: Any) -> list[Problem]:
        form = _form(data)
        wanted = {"plain": {"text_fields"}, "messages": {"messages_field"},
                  "pair": {"prompt_field", "prompt_template", "response_field", "use_chat_template"}}
        problems = used_fields(data, wanted.get(form, set()), self.name)
        if form is None:
            problems.append(Problem("data", None, "causal_lm needs response_field with prompt_field or "
                                    "prompt_template, or messages_field (chat), or text_fields: [text] (plain "
                                    "text); set exactly one form"))
        elif form == "pair":
            problems += _pair_problems(data)
        elif form == "plain" and len(data.text_fields) != 1:
            problems.append(Problem("data.text_fields", data.text_fields, "plain-text causal_lm reads one field"))
        return problems

    def check_metric(self, data: Any, metric: str) -> str | None:
        if metric in GENERATION_METRICS and _form(data) == "plain":
            return f"{metric} compares generations with references; plain text has none (use eval_loss)"
        return None

    def columns(self, data: Any) -> list[tuple[str, str]]:
        form = _form(data)
        if form == "plain":
            return [("text_fields", data.text_fields[0])]
        if form == "messages":
            return [("messages_field", data.messages_field)]
        prompt = ([("prompt_field", data.prompt_field)] if data.prompt_field else
                  [("prompt_template", c) for c in _placeholders(data.prompt_template)])
        return [*prompt, ("response_field", data.response_field)]

    # ---------------------------------------------------------------- rows
    def select(self, rows: Rows, data: Any, split: str, features: Any = None) -> Rows:
        form = _form(data)
        if form == "plain":
            return {"text": _texts(rows[data.text_fields[0]])}
        if form == "messages":
            return {"messages": [_messages(m, data.messages_field, split, i) for i, m in
                                 enumerate(rows[data.messages_field])]}
        prompts = (_texts(rows[data.prompt_field]) if data.prompt_field else
                   [data.prompt_template.format_map({c: rows[c][i] for c in _placeholders(data.prompt_template)})
                    for i in range(len(rows[data.response_field]))])
        responses = _texts(rows[data.response_field])
        if not any(r.strip() for r in responses):
            raise UserError(f"data.response_field = {data.response_field!r}: every response of the {split} split "
                            "is empty; point response_field at the column the model should learn to write")
        return {"prompt": prompts, "response": responses}

    def dedupe_key(self, rows: Rows, i: int) -> Any:
        return tuple(str(rows[c][i]) for c in rows)

    def encode(self, rows: Rows, data: Any, tokenizer: Any, label_names: list[str] | None,
               split: str) -> tuple[Rows, int]:
        out: Rows = {"input_ids": [], "labels": [], "prompt_ids": [], "reference": []}
        dropped = 0
        for i in range(len(next(iter(rows.values())))):
            fitted = fit(*self._tokens(rows, i, data, tokenizer), data.max_length)
            if fitted is None:
                dropped += 1
                continue
            ids, mask, start = fitted
            out["input_ids"].append(ids)
            out["labels"].append([t if m else IGNORE for t, m in zip(ids, mask)])
            out["prompt_ids"].append(ids[:start])
            out["reference"].append(self._reference(rows, i))
        if not out["input_ids"]:
            raise UserError(f"data.max_length = {data.max_length}: every response of the {split} split is longer "
                            "than max_length tokens (rows are dropped, never cut in the response); raise max_length")
        return out, dropped

    def _tokens(self, rows: Rows, i: int, data: Any, tokenizer: Any) -> tuple[list[int], list[bool], int]:
        """Token ids, the loss mask, and where the last response starts (what generation continues)."""
        if "text" in rows:
            ids = tokenizer(rows["text"][i], truncation=True, max_length=data.max_length - 1)["input_ids"]
            ids += _eos(tokenizer)
            return ids, [True] * len(ids), len(ids)
        if "messages" in rows:
            return chat_tokens(tokenizer, rows["messages"][i])
        if data.use_chat_template:
            return chat_tokens(tokenizer, [{"role": "user", "content": rows["prompt"][i]},
                                           {"role": "assistant", "content": rows["response"][i]}])
        prompt = tokenizer(rows["prompt"][i])["input_ids"]
        response = tokenizer(rows["response"][i], add_special_tokens=False)["input_ids"] + _eos(tokenizer)
        return prompt + response, [False] * len(prompt) + [True] * len(response), len(prompt)

    def _reference(self, rows: Rows, i: int) -> str:
        if "messages" in rows:
            return next(m["content"] for m in reversed(rows["messages"][i]) if m["role"] == "assistant")
        return rows["response"][i] if "response" in rows else ""

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        import torch

        loss, n = 0.0, 0
        for batch in ctx.batches():
            target = batch.pop("labels")
            logits = ctx.forward(batch)
            shifted = target[:, 1:].to(logits.device)
            loss += float(torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE, reduction="sum"))
            n += int((shifted != IGNORE).sum())
        mean = loss / max(n, 1)
        scores = {"eval_loss": mean, "perplexity": math.exp(min(mean, 50.0))}
        spec = ctx.generation
        if ctx.generate is not None and spec is not None and (ctx.final or spec.at_evals):
            scores.update(self.generation_scores(ctx))
        return scores

    def generation_scores(self, ctx: EvalContext) -> dict[str, float]:
        """exact_match and rouge_l of greedy generations on the first ``max_samples`` rows."""
        references = ctx.split.columns.get("reference") or []
        rows = [i for i, r in enumerate(references) if r][: ctx.generation.max_samples]
        if not rows or ctx.generate is None:
            return {}
        prompts = [ctx.split.columns["prompt_ids"][i] for i in rows]
        outputs = ctx.generate(prompts, ctx.generation.max_new_tokens)
        texts = [ctx.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
        return text_scores(texts, [references[i] for i in rows])


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean exact match (normalised) and ROUGE-L F-measure of predictions against references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    n = max(len(references), 1)
    exact = sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / n
    rouge = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)) / n
    return {"exact_match": float(exact), "rouge_l": float(rouge)}


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def fit(ids: list[int], mask: list[bool], start: int,
        max_length: int) -> tuple[list[int], list[bool], int] | None:
    """Cut the start of the prompt until the row fits; None when the last response alone does not fit."""
    if len(ids) <= max_length:
        return ids, mask, start
    if len(ids) - start > max_length:
        return None
    cut = len(ids) - max_length
    return ids[cut:], mask[cut:], start - cut


def chat_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[bool], int]:
    """Token ids of a rendered chat, True on assistant-turn tokens, and where the last reply starts.

    An assistant span is the text between the chat rendered with ``add_generation_prompt=True``
    before that turn and the chat rendered up to that turn; token offsets map spans to tokens.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("data.messages_field / data.use_chat_template: the tokenizer has no chat template; use "
                        "prompt_field + response_field without use_chat_template, or a chat model")

    def render(turns: list[dict[str, str]], generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)

    spans = [(len(render(messages[:i], True)), len(render(messages[: i + 1])))
             for i, turn in enumerate(messages) if turn["role"] == "assistant"]
    encoded = tokenizer(render(messages), add_special_tokens=False, return_offsets_mapping=True)
    offsets = [a for a, _ in encoded["offset_mapping"]]
    mask = [any(s <= a < e for s, e in spans) for a in offsets]
    start = next((j for j, a in enumerate(offsets) if a >= spans[-1][0]), len(offsets))
    return list(encoded["input_ids"]), mask, start


def _form(data: Any) -> str | None:
    if data.messages_field:
        return "messages"
    if data.response_field or data.prompt_field or data.prompt_template:
        return "pair"
    if data.text_fields:
        return "plain"
    return None


def _pair_problems(data: Any) -> list[Problem]:
    """A prompt/response pair needs a response column, one prompt source, and a template that parses."""
    problems = []
    if data.response_field is None:
        problems.append(Problem("data.response_field", None, "name the column the model learns to write, "
                                "e.g. response_field: answer"))
    if (data.prompt_field is None) == (data.prompt_template is None):
        problems.append(Problem("data.prompt_field", data.prompt_field,
                                "set exactly one of prompt_field and prompt_template"))
    elif data.prompt_template is not None:
        try:
            parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(data.prompt_template)
                     if f is not None]
            fields = [f for f, _, _ in parts]
            if any(not f.isidentifier() for f in fields):
                raise ValueError(f"placeholders {[f for f in fields if not f.isidentifier()]} are not column names")
            if any(spec or conv for _, spec, conv in parts):
                raise ValueError("format specs and conversions (':', '!') are not allowed")
            if not fields:
                raise ValueError("it names no column")
        except ValueError as exc:
            problems.append(Problem("data.prompt_template", data.prompt_template,
                                    f"not a usable template ({exc}); name columns as {{column}} and write "
                                    "literal braces as {{ and }}"))
    return problems


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _texts(values: list[Any]) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _messages(value: Any, field: str, split: str, row: int) -> list[dict[str, str]]:
    """One row's chat turns, checked: a list of {role, content} with text content and an assistant turn."""
    if not isinstance(value, list) or not value:
        problem = "is not a non-empty list of turns"
    elif not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value):
        problem = "has a turn without both 'role' and 'content'"
    elif not all(isinstance(m["content"], str) and isinstance(m["role"], str) for m in value):
        problem = "has a turn whose role or content is not text (null or a number)"
    elif not any(m["role"] == "assistant" for m in value):
        problem = f"has no turn with role 'assistant' (roles: {sorted({m['role'] for m in value})})"
    else:
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UserError(f"data.messages_field = {field!r}: row {row} of the {split} split {problem}: "
                    f"{str(value)[:120]}; each row must be a list of {{role, content}} turns with text content "
                    "and at least one 'assistant' turn")

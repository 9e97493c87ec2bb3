"""Causal language modelling / supervised fine-tuning (``model.task: causal_lm``).

Three row forms (``data``):

- ``prompt_field`` or ``prompt_template`` (``{column}`` placeholders) + ``response_field``: the
  loss is on the response tokens only (plus EOS); with ``use_chat_template: true`` the pair is
  rendered as a user turn and an assistant turn with the tokenizer's chat template;
- ``messages_field``: a list of ``{role, content}`` rendered with the chat template, the loss on
  assistant turns only (the end-of-turn marker included, so the model learns to stop), each
  reply's span checked against the whole rendering (``lm_rows``); ``data.system_turn`` keeps,
  merges or drops system turns for templates that refuse them;
- ``text_fields: [text]``: plain text, the loss on every token.

``input_ids`` and ``labels``: [n_tokens] per row, -100 where no loss is taken. A row longer than
``max_length`` keeps its template and its response: the oldest exchanges of a chat are dropped,
then the prompt's text is cut from its start (``lm_rows``); rows that do not fit even so are
dropped. Both are counted (``validate``). Evaluation: ``eval_loss`` (mean cross-entropy per
response token) and ``perplexity`` (its exponential); with references, greedy generation from the
prompt on a capped sample gives ``exact_match`` (SQuAD-style normalised) and ``rouge_l``
(``rouge_score``'s F-measure).
"""

from __future__ import annotations

import math
import string
from typing import TYPE_CHECKING, Any, ClassVar

from adalora_search.errors import DataRowError, Problem, UserError
from adalora_search.tasks import lm_rows
from adalora_search.tasks.base import Direction, Encoded, EvalContext, Rows, Task, imperfect, texts, used_fields
from adalora_search.tasks.squad import normalize

if TYPE_CHECKING:
    from adalora_search.train.data import Split

IGNORE = -100
GENERATION_METRICS = ("exact_match", "rouge_l")
PROMPT = "prompt:"  # column prefix of the prompt template's columns (kept apart until encoding)
DROPPED_TOO_LONG = "longer than data.max_length with the prompt text cut to nothing"


class CausalLM(Task):
    """Supervised fine-tuning of a decoder LLM: loss on responses, generation metrics."""

    name = "causal_lm"
    token_labels = True
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    metrics: ClassVar[dict[str, Direction]] = {
        "eval_loss": "minimize",
        "perplexity": "minimize",
        "exact_match": "maximize",
        "rouge_l": "maximize",
    }
    main_metric = "eval_loss"
    data_fields = frozenset(
        {"text_fields", "prompt_field", "prompt_template", "response_field", "use_chat_template"}
        | {"messages_field", "system_turn"}
    )
    pools_on_pad = False
    generates = True
    invariants = (
        "a perfect prediction scores perfectly (exact match and ROUGE-L of the validation replies)",
        "the loss is taken on the replies only (each reply's span checked against the rendered chat)",
    )
    generation_metrics = GENERATION_METRICS

    # ---------------------------------------------------------------- checks
    def check_config(self, config: Any) -> str | None:
        if getattr(config, "is_encoder_decoder", False):  # AutoModelForCausalLM would keep its decoder alone
            return (
                f"{config.model_type} is an encoder-decoder model; causal_lm would train its decoder alone, "
                "without the encoder; use model.task: seq2seq with source_field and target_field"
            )
        return None

    def loss_terms(self, batch: dict[str, Any]) -> int:
        """Predicted tokens with a label: transformers shifts the labels [batch, width] by one, so a row's first
        label is never a loss term (it may be a real token in plain-text rows).
        """
        return int((batch["labels"][:, 1:] != -100).sum())

    def check_data(self, data: Any) -> list[Problem]:
        form = _form(data)
        wanted = {
            "plain": {"text_fields"},
            "messages": {"messages_field", "system_turn"},
            "pair": {"prompt_field", "prompt_template", "response_field", "use_chat_template"},
        }
        problems = used_fields(data, wanted.get(form, set()), self.name)
        if form is None:
            problems.append(
                Problem(
                    "data",
                    None,
                    "causal_lm needs response_field with prompt_field or "
                    "prompt_template, or messages_field (chat), or text_fields: [text] (plain "
                    "text); set exactly one form",
                )
            )
        elif form == "pair":
            problems += _pair_problems(data)
        elif form == "plain" and len(data.text_fields) != 1:
            problems.append(Problem("data.text_fields", data.text_fields, "plain-text causal_lm reads one field"))
        return problems

    def check_training(self, training: Any, data: Any) -> list[Problem]:
        if "generation" in training.model_fields_set and _form(data) == "plain":
            return [
                Problem(
                    "training.generation",
                    training.generation.model_dump(),
                    "plain text has no responses to generate and compare; remove training.generation",
                )
            ]
        return []

    def truncation(self, data: Any) -> str:
        return {
            "plain": "the end of the text is cut",
            "messages": "the oldest exchanges are dropped, then the longest user turn is cut from its start; "
            "system turns, the chat template's markers and the answered reply are kept",
        }.get(
            _form(data),
            "the prompt's longest column is cut from its start; the template's own text, the chat "
            "markers and the response are kept",
        )

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
        prompt = (
            [("prompt_field", data.prompt_field)]
            if data.prompt_field
            else [("prompt_template", c) for c in _placeholders(data.prompt_template)]
        )
        return [*prompt, ("response_field", data.response_field)]

    # ---------------------------------------------------------------- rows
    def select(self, rows: Rows, data: Any, split: str, features: Any = None) -> Rows:
        form = _form(data)
        if form == "plain":
            return {"text": texts(rows[data.text_fields[0]])}
        if form == "messages":
            return {
                "messages": [
                    _messages(m, data.messages_field, split, i) for i, m in enumerate(rows[data.messages_field])
                ]
            }
        responses = texts(rows[data.response_field])
        if not any(r.strip() for r in responses):
            raise UserError(
                f"data.response_field = {data.response_field!r}: every response of the {split} split "
                "is empty; point response_field at the column the model should learn to write"
            )
        # the prompt's columns, kept apart so that truncation shortens their text, never the template's own
        return {**{PROMPT + c: texts(rows[c]) for c in _placeholders(_template(data))}, "response": responses}

    def dedupe_key(self, rows: Rows, i: int) -> Any:
        return tuple(str(rows[c][i]) for c in rows)

    def encode(self, rows: Rows, data: Any, tokenizer: Any, label_names: list[str] | None, split: str) -> Encoded:
        if ("messages" in rows or data.use_chat_template) and not getattr(tokenizer, "chat_template", None):
            raise UserError(
                "data.messages_field / data.use_chat_template: the tokenizer has no chat template; give "
                "model.chat_template, use prompt_field + response_field without use_chat_template, "
                "or a chat model"
            )
        out: Rows = {"input_ids": [], "labels": [], "prompt_ids": [], "reference": []}
        n = len(next(iter(rows.values())))
        dropped, truncated, failures = 0, 0, []
        for i in range(n):
            try:
                fitted = self._fit(rows, i, data, tokenizer)
            except lm_rows.RowError as exc:
                failures.append((i, exc))
                continue
            if fitted is None:
                dropped += 1
                continue
            truncated += fitted.truncated
            out["input_ids"].append(fitted.ids)
            out["labels"].append([t if m else IGNORE for t, m in zip(fitted.ids, fitted.mask)])
            out["prompt_ids"].append(fitted.ids[: fitted.start])
            out["reference"].append(self._reference(rows, i))
        if failures:
            raise _template_failure(failures, rows, n, split, tokenizer)
        if not out["input_ids"]:
            raise UserError(
                f"data.max_length = {data.max_length}: no row of the {split} split fits in max_length "
                "tokens, even with its prompt text cut to nothing (the response and the chat "
                "template's fixed text are never cut); raise max_length"
            )
        return Encoded(out, {DROPPED_TOO_LONG: dropped} if dropped else {}, truncated)

    def _fit(self, rows: Rows, i: int, data: Any, tokenizer: Any) -> lm_rows.Fitted | None:
        """One row's tokens within ``data.max_length`` (see ``lm_rows``); None when it cannot fit."""
        if "text" in rows:
            eos = _eos(tokenizer)  # plain text: the end of a long text is cut, by the tokenizer (special tokens kept)
            ids = tokenizer(rows["text"][i], truncation=True, max_length=data.max_length - len(eos))["input_ids"]
            cut = len(tokenizer(rows["text"][i])["input_ids"]) > len(ids)
            return lm_rows.Fitted(ids + eos, [True] * (len(ids) + len(eos)), len(ids) + len(eos), cut)
        if "messages" in rows:
            return lm_rows.fit_chat(tokenizer, rows["messages"][i], data.max_length, data.system_turn)
        template, response = _template(data), rows["response"][i]

        def build(values: dict[Any, str]) -> lm_rows.Tokens:
            prompt = template.format_map(values)
            if data.use_chat_template:
                return lm_rows.chat_tokens(
                    tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
                )
            ids = tokenizer(prompt)["input_ids"]
            reply = tokenizer(response, add_special_tokens=False)["input_ids"] + _eos(tokenizer)
            return ids + reply, [False] * len(ids) + [True] * len(reply), len(ids)

        values = {c: rows[PROMPT + c][i] for c in _placeholders(template)}
        shortened = lm_rows.shorten(build, values, data.max_length, tokenizer)
        if shortened is None:
            return None
        (ids, mask, start), cut = shortened
        return lm_rows.Fitted(ids, mask, start, cut)

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
            loss += float(
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE, reduction="sum"
                )
            )
            n += int((shifted != IGNORE).sum())
        mean = loss / max(n, 1)
        scores = {"eval_loss": mean, "perplexity": math.exp(min(mean, 50.0))}
        spec = ctx.generation
        if ctx.generate is not None and spec is not None and (ctx.final or spec.at_evals):
            scores.update(self.generation_scores(ctx))
        return scores

    def perfect_prediction(self, split: Split) -> tuple[str, str] | None:
        return imperfect(split.columns.get("reference", []), text_scores, {"exact_match": 1.0, "rouge_l": 1.0})

    def generation_scores(self, ctx: EvalContext) -> dict[str, float]:
        """exact_match and rouge_l of greedy generations on the first ``max_samples`` rows."""
        references = ctx.split.columns.get("reference", [])
        rows = [i for i, r in enumerate(references) if r][: ctx.generation.max_samples]
        if not rows or ctx.generate is None:
            return {}
        prompts = [ctx.split.columns["prompt_ids"][i] for i in rows]
        outputs = ctx.generate(prompts, ctx.generation.max_new_tokens)
        generated = [ctx.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
        return text_scores(generated, [references[i] for i in rows])


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean exact match (normalised) and ROUGE-L F-measure of predictions against references."""
    from adalora_search.tasks.text_metrics import scorer as rouge_scorer

    scorer = rouge_scorer(["rougeL"])
    n = max(len(references), 1)
    exact = sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / n
    rouge = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)) / n
    return {"exact_match": float(exact), "rouge_l": float(rouge)}


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
        problems.append(
            Problem(
                "data.response_field", None, "name the column the model learns to write, e.g. response_field: answer"
            )
        )
    if (data.prompt_field is None) == (data.prompt_template is None):
        problems.append(
            Problem("data.prompt_field", data.prompt_field, "set exactly one of prompt_field and prompt_template")
        )
    elif data.prompt_template is not None:
        try:
            parts = [
                (f, spec, conv) for _, f, spec, conv in string.Formatter().parse(data.prompt_template) if f is not None
            ]
            fields = [f for f, _, _ in parts]
            if any(not f.isidentifier() for f in fields):
                raise ValueError(f"placeholders {[f for f in fields if not f.isidentifier()]} are not column names")
            if any(spec or conv for _, spec, conv in parts):
                raise ValueError("format specs and conversions (':', '!') are not allowed")
            if not fields:
                raise ValueError("it names no column")
        except ValueError as exc:
            problems.append(
                Problem(
                    "data.prompt_template",
                    data.prompt_template,
                    f"not a usable template ({exc}); name columns as {{column}} and write "
                    "literal braces as {{ and }}",
                )
            )
    return problems


def _placeholders(template: str) -> list[str]:
    return list(dict.fromkeys(name for _, name, _, _ in string.Formatter().parse(template) if name))


def _template(data: Any) -> str:
    """The prompt as a template: ``prompt_template``, or ``{prompt_field}``."""
    return data.prompt_template if data.prompt_template is not None else "{" + data.prompt_field + "}"


def _template_failure(
    failures: list[tuple[int, lm_rows.RowError]], rows: Rows, n: int, split: str, tokenizer: Any
) -> UserError:
    """One error for every row the chat template failed on: how many, the first row, the template's message."""
    i, exc = failures[0]
    shown = str(rows["messages"][i] if "messages" in rows else {c.removeprefix(PROMPT): v[i] for c, v in rows.items()})
    shown = shown[:160] + ("..." if len(shown) > 160 else "")
    return UserError(
        f"model.name_or_path = {tokenizer.name_or_path!r}: its chat template failed on {len(failures)} "
        f"of {n} rows of the {split} split; first, row {i} ({shown}): {exc}; {exc.fix}"
    )


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _messages(value: Any, field: str, split: str, row: int) -> list[dict[str, str]]:
    """One row's chat turns, checked: a list of {role, content} with text content and an assistant turn."""
    if not isinstance(value, list) or not value:
        problem = "is not a non-empty list of turns"
    elif not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value):
        problem = "has a turn without both 'role' and 'content'"
    elif any(isinstance(m["content"], list) for m in value):
        problem = "has a turn whose content is a list of parts, not text; join the text parts into one string"
    elif not all(isinstance(m["content"], str) and isinstance(m["role"], str) for m in value):
        problem = "has a turn whose role or content is not text (null or a number)"
    elif not any(m["role"] == "assistant" for m in value):
        problem = f"has no turn with role 'assistant' (roles: {sorted({m['role'] for m in value})})"
    else:
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataRowError(
        row,
        f"data.messages_field = {field!r}: {{row}} {problem}: {str(value)[:120]}; each row must "
        "be a list of {role, content} turns with text content and at least one 'assistant' turn",
        split,
    )

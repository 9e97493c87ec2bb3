"""How one causal-LM row becomes tokens: chat rendering, the verified loss mask, and truncation.

A row's tokens are ``ids`` [n_tokens], a loss ``mask`` (True where the model learns) and ``start``,
where the answered reply begins (generation prompts are ``ids[:start]``).

Chat rows are rendered with the tokenizer's chat template (or ``model.chat_template``). The reply
spans come from rendering prefixes of the chat (up to each assistant turn with the generation
prompt, and through it), which holds only when the template renders earlier turns the way it
renders the whole chat: every span is checked against the full rendering, and against the reply's
own text. Where the check fails, the template's own ``{% generation %}`` mask is used
(``apply_chat_template(..., return_assistant_tokens_mask=True)``), else the row is refused.

Truncation never cuts the template's structure (BOS, role markers, the answered turn's header),
the system turns nor the response: the oldest exchanges of a chat are dropped first, then the
longest prompt text (a template placeholder's value, a user turn) loses tokens from its start, and
the row is rendered again. A row that cannot fit with its prompt text cut to nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Tokens = tuple[list[int], list[bool], int]  # ids, loss mask, where the answered reply starts
Messages = list[dict[str, str]]
_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


class RowError(Exception):
    """A row the chat template cannot render, or whose loss mask cannot be verified; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class Fitted:
    """A row's tokens within ``max_length``; ``truncated``: prompt text was cut or old turns dropped."""

    ids: list[int]
    mask: list[bool]
    start: int
    truncated: bool


def render(tokenizer: Any, messages: Messages, generation_prompt: bool = False) -> str:
    """The chat as text; ``RowError`` with the template's own message when the template raises."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # noqa: BLE001 - the template is user code (jinja2.TemplateError, TypeError, ...)
        has_system = any(m["role"] == "system" for m in messages)
        fix = (
            "set data.system_turn: merge (the system text is joined to the first user turn) or drop, or give "
            "model.chat_template"
            if has_system
            else "give model.chat_template (a template that renders these roles), or fix the rows"
        )
        raise RowError(f"the chat template raised {type(exc).__name__}: {exc}", fix) from None


def chat_tokens(tokenizer: Any, messages: Messages) -> Tokens:
    """Token ids of a rendered chat, True on assistant replies (the end-of-turn marker included), and
    where the last reply starts.

    Raises:
        RowError: the template raises, or the reply spans fail the check and the template has no
            ``{% generation %}`` blocks to take the mask from.
    """
    full = render(tokenizer, messages)
    try:
        spans = _reply_spans(tokenizer, messages, full)
    except RowError:
        if not _GENERATION_BLOCK.search(tokenizer.chat_template or ""):
            raise
        return _template_mask(tokenizer, messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    mask = [any(a < e and b > s for s, e in spans) for a, b in offsets]  # a token overlapping a reply
    last = spans[-1][0]
    start = next((j for j, (_, b) in enumerate(offsets) if b > last), len(offsets))
    return list(encoded["input_ids"]), mask, start


REPLY = "ADALORASEARCHREPLY"  # stands in for a reply's text: where the template writes it is where it is found
_MASK_FIX = (
    "give model.chat_template with {% generation %} blocks around the replies, whose own mask is then used, "
    "or a template that renders every turn's text unchanged"
)


def _reply_spans(tokenizer: Any, messages: Messages, full: str) -> list[tuple[int, int]]:
    """Character spans of the assistant replies in ``full``: from the reply's text to the end of its turn.

    The reply's start is where the template writes a stand-in for its text (never a search for the text,
    which may also occur in the turn's header); text the template puts before a reply that the generation
    prompt does not (a header of a template that ignores ``add_generation_prompt``, an empty reasoning
    block) is left to the prompt.
    """
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (full.startswith(before) and full.startswith(through) and len(through) > len(before)):
            raise RowError(
                f"the chat template renders the conversation up to assistant turn {i} differently from "
                "the whole conversation (it rewrites earlier turns), so the reply's span cannot be taken "
                "from prefixes and the loss mask would cover other text",
                _MASK_FIX,
            )
        marked = render(tokenizer, [*messages[:i], {**turn, "content": REPLY}])
        at = marked.find(REPLY)
        text = full[at : len(through)] if at >= 0 else ""
        if (
            at < 0
            or not full.startswith(marked[:at])
            or not text.startswith((turn["content"], turn["content"].strip()))
        ):
            raise RowError(
                f"the chat template changes or leaves out the text of assistant turn {i}, so the loss "
                "mask cannot be placed on it",
                _MASK_FIX,
            )
        spans.append((at, len(through)))
    return spans


def _template_mask(tokenizer: Any, messages: Messages) -> Tokens:
    """The template's own assistant mask (its ``{% generation %}`` blocks), as transformers computes it."""
    try:
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception as exc:  # noqa: BLE001 - the template is user code
        raise RowError(f"the chat template raised {type(exc).__name__}: {exc}", "fix model.chat_template") from None
    ids, mask = list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
    if not any(mask):
        raise RowError(
            "the chat template's {% generation %} blocks mark no token of this row",
            "put {% generation %} ... {% endgeneration %} around each assistant reply",
        )
    last = len(mask) - 1 - mask[::-1].index(True)
    while last > 0 and mask[last - 1]:
        last -= 1
    return ids, mask, last


def drop_leading_tokens(tokenizer: Any, text: str, k: int) -> str:
    """``text`` without its first ``k`` tokens (cut at a token boundary of the original text)."""
    if k <= 0:
        return text
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return "" if k >= len(offsets) else text[offsets[k][0] :].lstrip()
    except NotImplementedError:  # a slow tokenizer: no offsets
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return "" if k >= len(ids) else tokenizer.decode(ids[k:])


def shorten(
    build: Callable[[dict[Any, str]], Tokens],
    texts: dict[Any, str],
    max_length: int,
    tokenizer: Any,
    tokens: Tokens | None = None,
) -> tuple[Tokens, bool] | None:
    """Cut the longest of ``texts`` (prompt text) from its start until ``build(texts)`` fits ``max_length``.

    Returns the tokens and whether anything was cut; None when the row does not fit with every text
    cut to nothing (the response, or the template's fixed text, is longer). Each round removes at
    least one token, so the loop ends.
    """
    texts = dict(texts)
    tokens = tokens or build(texts)
    cut = False
    while len(tokens[0]) > max_length:
        longest = max((k for k in texts if texts[k]), key=lambda k: len(texts[k]), default=None)
        if longest is None:
            return None
        texts[longest] = drop_leading_tokens(tokenizer, texts[longest], max(len(tokens[0]) - max_length, 1))
        cut, tokens = True, build(texts)
    return tokens, cut


def fit_chat(tokenizer: Any, messages: Messages, max_length: int, system_turn: str = "keep") -> Fitted | None:
    """A chat row within ``max_length``: oldest exchanges dropped, then user turns shortened (system turns are
    never cut; ``system_turn`` merges or drops them when rendering); None if it cannot fit.
    """

    def tokens_of(chat: Messages) -> Tokens:
        return chat_tokens(tokenizer, system_turns(chat, system_turn))

    tokens = tokens_of(messages)
    dropped = False
    while len(tokens[0]) > max_length and (shorter := _without_oldest_exchange(messages)) is not None:
        messages, dropped = shorter, True
        tokens = tokens_of(messages)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    texts = {i: m["content"] for i, m in enumerate(messages[:last]) if m["role"] == "user"}

    def build(values: dict[Any, str]) -> Tokens:
        return tokens_of([{**m, "content": values.get(i, m["content"])} for i, m in enumerate(messages)])

    shortened = shorten(build, texts, max_length, tokenizer, tokens)
    if shortened is None:
        return None
    (ids, mask, start), cut = shortened
    return Fitted(ids, mask, start, cut or dropped)


def _without_oldest_exchange(messages: Messages) -> Messages | None:
    """The chat without its oldest exchange (up to and including the first assistant turn), system turns kept;
    None when only the last exchange is left.
    """
    system = [m for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    replies = [i for i, m in enumerate(rest) if m["role"] == "assistant"]
    if len(replies) < 2:
        return None
    return system + rest[replies[0] + 1 :]


def system_turns(messages: Messages, how: str) -> Messages:
    """``data.system_turn``: keep system turns, drop them, or merge them into the first user turn."""
    if how == "keep" or not any(m["role"] == "system" for m in messages):
        return messages
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    if how == "merge":
        first = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
        if first is None:
            return [{"role": "user", "content": system}, *rest]
        rest[first] = {**rest[first], "content": f"{system}\n\n{rest[first]['content']}"}
    return rest

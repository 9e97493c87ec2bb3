"""What most tasks do with batches and generation, as ``Task.collate`` and ``Task.generate`` use it.

Encoder and decoder-only tasks put labels on the input's positions (one per row, or one per token),
and a decoder continues its prompt: its new tokens follow the prompt in ``generate``'s output. A task
whose labels or outputs are shaped otherwise (a text-to-text model: labels of their own length, an
output that is all new tokens) overrides ``collate`` / ``generate`` instead of changing these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported by the calls that batch: reading a study file never imports it
    import torch

    from adalora_search.train.data import Split


@dataclass(frozen=True)
class Generation:
    """How the engine runs ``generate`` for a task: padding and end ids, batch size, device, bf16 autocast, and
    the study's decoding (``training.generation``: beams, length penalty).
    """

    pad_id: int
    eos_id: int | None
    batch_size: int
    device: Any  # torch.device
    autocast: bool
    num_beams: int = 1
    length_penalty: float = 1.0

    def kwargs(self) -> dict[str, Any]:
        """``generate``'s decoding arguments: no sampling, the study's beams (always given: a checkpoint's
        ``generation_config`` may set its own, e.g. BART-large's 4) and, with beams, its length penalty. The
        checkpoint's other settings (e.g. ``no_repeat_ngram_size``) still apply, as in ``model.generate``.
        """
        penalty = {"length_penalty": self.length_penalty} if self.num_beams > 1 else {}
        eos = {"eos_token_id": self.eos_id} if self.eos_id is not None else {}  # None would disable stopping
        return {"do_sample": False, "num_beams": self.num_beams, "pad_token_id": self.pad_id, **eos, **penalty}

    def ends(self, model: Any) -> set[int]:
        """The ids a generation ends at: the tokenizer's EOS, else the model's ``generation_config`` EOS (one id
        or a list, e.g. a chat model's end-of-turn too).
        """
        if self.eos_id is not None:
            return {self.eos_id}
        config = getattr(model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
        return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())


def until_end(row: list[int], ends: set[int]) -> list[int]:
    """A generated row up to (without) its first end id."""
    return next((row[:i] for i, token in enumerate(row) if token in ends), row)


def pad(rows: Sequence[Sequence[int]], width: int, value: int) -> torch.Tensor:
    """Rows of ids [n, <= width] right-padded with ``value`` into a long tensor [n, width] (filled in numpy: one
    tensor per batch, not one per row).
    """
    import torch

    out = np.full((len(rows), width), value, dtype=np.int64)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row
    return torch.from_numpy(out)


def eval_order(split: Split) -> np.ndarray:
    """The row order of unshuffled batches (evaluation): shortest first, ties in row order. A task that maps
    outputs back to rows (question answering's windows) walks the batches in this order.
    """
    return np.argsort([len(x) for x in split.columns["input_ids"]], kind="stable")


def inputs(split: Split, rows: Sequence[int], pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` [batch, width] (long, right-padded), and ``token_type_ids`` when the
    split has them: a batch without its labels.
    """
    import torch

    ids = [split.columns["input_ids"][i] for i in rows]
    lengths = np.array([len(x) for x in ids])
    mask = torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))
    batch = {"input_ids": pad(ids, width, pad_id), "attention_mask": mask}
    if "token_type_ids" in split.columns:
        batch["token_type_ids"] = pad([split.columns["token_type_ids"][i] for i in rows], width, 0)
    return batch


def collate(split: Split, rows: Sequence[int], pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` [batch, width] (long, right-padded), ``token_type_ids`` when the
    split has them, and ``labels``: [batch] (long ids or float scores) or [batch, width] (-100 padded).
    """
    import torch

    batch = inputs(split, rows, pad_id, width)
    labels = [split.columns["labels"][i] for i in rows]
    if isinstance(labels[0], list):
        batch["labels"] = pad(labels, width, -100)
    else:
        batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    return batch


def generate_continuations(
    model: Any, prompts: list[list[int]], max_new_tokens: int, how: Generation
) -> list[list[int]]:
    """Continuations [n_new] of each prompt of a decoder-only model: left-padded batches, the tokens
    after the prompt, cut at EOS.
    """
    import torch

    out: list[list[int]] = []
    pad_id, ends = how.pad_id, how.ends(model)
    for i in range(0, len(prompts), how.batch_size):
        chunk = prompts[i : i + how.batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk], device=how.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=how.device)
        with torch.autocast(how.device.type, dtype=torch.bfloat16, enabled=how.autocast):
            generated = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                **how.kwargs(),
            )
        out += [until_end(row, ends) for row in generated[:, width:].tolist()]
    return out


def pad_id(tokenizer: Any) -> int:
    """The id padding uses: the tokenizer's pad token, else EOS (decoder LLMs), else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0

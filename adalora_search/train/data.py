"""Data: the raw splits (``train/splits.py``) tokenized through the task once per (data spec, source content,
tokenizer), cached on disk.

Every trial and every worker of a study reads the same cached token ids; batches are padded
per batch (dynamic padding) and grouped by length, because most rows are far shorter than
``max_length``. ``datasets`` is imported only where data is loaded or cached, so the training
loop (``Split``, ``batches``) runs where only torch is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adalora_search import files
from adalora_search.study.spec import DataSpec
from adalora_search.tasks import batching
from adalora_search.train import sources, splits
from adalora_search.train.splits import SPLITS, load_splits  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from adalora_search.tasks import Task

# (split, row indices, pad id, width) -> one batch: the task's ``Task.collate``
Collate = Callable[["Split", Sequence[int], int, int], dict[str, torch.Tensor]]


def _datasets():  # noqa: ANN202 - the module
    import datasets

    datasets.disable_progress_bars()
    return datasets


@dataclass(frozen=True)
class Split:
    """One tokenized split as ragged columns, one entry per row.

    ``input_ids``: [n_tokens] per row; ``labels``: a class id (int) or score (float) per row, or
    [n_tokens] per row with -100 where no loss is taken; ``token_type_ids`` (sentence pairs)
    optional; other columns (``prompt_ids``, ``reference``) are read by the task's evaluation.
    """

    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["input_ids"])


@dataclass(frozen=True)
class TokenizedData:
    """A study's tokenized splits (``train``, ``validation``, optional ``test``) and what batches need."""

    splits: dict[str, Split]
    label_names: list[str] | None  # class or tag names in id order; None for regression and causal_lm
    pad_token_id: int
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> rows left out
    truncated: dict[str, int] = field(default_factory=dict)  # rows cut to max_length, per split
    duplicates: dict[str, int] = field(default_factory=dict)  # repeated rows removed per source split
    source_rows: dict[str, int] = field(default_factory=dict)  # rows per source split before dedupe
    conflicts: dict[str, int] = field(default_factory=dict)  # of the repeats: rows with another label
    blank_labels: dict[str, int] = field(default_factory=dict)  # rows dropped for a blank label, per source split
    truncation: str = ""  # how the task truncates a row (Task.truncation)
    examples: dict[str, int] = field(default_factory=dict)  # encoded rows per split, when a row makes several
    tokenizer: Any = field(default=None, compare=False)  # for decoding generations

    def notes(self) -> list[str]:
        """What loading did to the rows: repeats removed, rows left out (by reason), rows truncated.

        The same sentences go to ``validate``, the run's log and the study (``status``, the report).
        """

        def per_split(counts: dict[str, int], totals: dict[str, int]) -> str:
            return ", ".join(
                f"{split} {n}" + (f" of {totals[split]}" if split in totals else "") for split, n in counts.items() if n
            )

        notes = []
        if any(self.blank_labels.values()):
            notes.append(
                "rows with a blank label, left out (data.drop_blank_labels): "
                f"{per_split(self.blank_labels, self.source_rows)} source rows"
            )
        if any(self.duplicates.values()):
            notes.append(
                "rows that repeat an earlier row, removed before the split and the caps (data.deduplicate): "
                f"{per_split(self.duplicates, self.source_rows)} source rows"
            )
        if any(self.conflicts.values()):
            notes.append(
                "of those, rows whose text repeats an earlier row with another label (the first label was "
                f"kept; check the data): {per_split(self.conflicts, {})}"
            )
        for reason in sorted({reason for counts in self.dropped.values() for reason in counts}):
            counts = {split: self.dropped[split].get(reason, 0) for split in self.dropped}
            notes.append(f"rows left out ({reason}): {per_split(counts, {})}")
        if any(self.truncated.values()):
            sizes = self.examples or {split: len(rows) for split, rows in self.splits.items()}
            notes.append(
                f"rows longer than data.max_length, truncated: {per_split(self.truncated, sizes)} ({self.truncation})"
            )
        return notes

    @property
    def num_labels(self) -> int:
        """Number of classes or tags (1 for regression and causal LM)."""
        return len(self.label_names) if self.label_names is not None else 1


def cache_root() -> Path:
    """Where tokenized data and converted models are cached: $ADALORA_SEARCH_CACHE or ~/.cache/adalora_search."""
    return Path(os.environ.get("ADALORA_SEARCH_CACHE", Path.home() / ".cache" / "adalora_search"))


def load_tokenized(spec: DataSpec, tokenizer: Any, task: Task) -> TokenizedData:
    """Tokenized splits from the disk cache, building (and caching) them on the first call.

    Raises:
        UserError: the source cannot be loaded, or its rows cannot be used for ``task``.
    """
    directory = cache_root() / "data" / _cache_key(spec, tokenizer, task)
    if not (directory / "meta.json").exists():
        _build_cache(spec, tokenizer, task, directory)
    meta = json.loads((directory / "meta.json").read_text())
    stored = _datasets().load_from_disk(str(directory / "splits"))
    splits = {name: Split({c: list(stored[name][c]) for c in stored[name].column_names}) for name in stored}
    return TokenizedData(
        splits,
        meta["label_names"],
        meta["pad_token_id"],
        meta["dropped"],
        meta["truncated"],
        meta["duplicates"],
        meta["source_rows"],
        meta.get("conflicts", {}),
        meta.get("blank_labels", {}),
        meta["truncation"],
        meta.get("examples", {}),
        tokenizer,
    )


def _cache_key(spec: DataSpec, tokenizer: Any, task: Task) -> str:
    """What the tokenized splits depend on: the data spec, the task, the tokenizer's content (not its
    path), the source's content (local files by hash) and the code that made them (``code_identity``), so an
    edited file, or an edited ``encode``, is never read from the cache.
    """
    identity = {
        "spec": spec.model_dump(mode="json"),
        "task": task.name,
        "tokenizer": tokenizer_identity(tokenizer),
        "source_content": sources.content_identity(spec.source),
        "code": code_identity(task),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def code_identity(task: Task) -> str:
    """SHA-256 of the source of every module that turns raw rows into cached token ids: the task's class and the
    classes it derives from, ``tasks/`` helpers it calls (batching: the pad id), the splitting, the sources, the
    packaged datasets' builders and this module. Replaces a
    hand-bumped cache version: an edit to ``encode`` reads the data again by itself.
    """
    import inspect
    import sys
    from importlib.metadata import version

    modules = {cls.__module__ for cls in type(task).__mro__ if cls.__module__.startswith("adalora_search.")}
    modules |= {"adalora_search.tasks.base", "adalora_search.tasks.lm_rows", "adalora_search.tasks.batching"}
    modules |= {__name__, splits.__name__, sources.__name__, "adalora_search.train.assets"}  # assets: packaged data
    digest = hashlib.sha256()
    for name in sorted(modules):
        module = sys.modules.get(name) or __import__(name, fromlist=["_"])
        try:
            digest.update(inspect.getsource(module).encode())
        except (OSError, TypeError):  # installed without its sources: the version stands for the code
            digest.update(f"{name}@{version('adalora-search')}".encode())
    return digest.hexdigest()[:16]


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's content: its whole serialised pipeline (fast tokenizers) or vocabulary, chat template
    and special tokens, hashed.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pipeline = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return {
        "class": type(tokenizer).__name__,
        "pipeline_sha": hashlib.sha256(pipeline.encode()).hexdigest(),
        "lowercase": tokenizer("A")["input_ids"],
        "chat_template": str(getattr(tokenizer, "chat_template", None)),
        "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
    }


def _build_cache(spec: DataSpec, tokenizer: Any, task: Task, directory: Path) -> None:
    counts: dict[str, Any] = {"duplicates": {}, "source_rows": {}}
    raw = splits.load_splits(spec, task, counts)
    label_names = task.label_names(raw["train"].to_dict(), spec, counts.pop("class_names"))
    tokenized, dropped, truncated, examples = {}, {}, {}, {}
    for name, ds in raw.items():
        encoded = task.encode(ds.to_dict(), spec, tokenizer, label_names, name)
        tokenized[name] = _datasets().Dataset.from_dict(encoded.columns)
        dropped[name], truncated[name] = encoded.dropped, encoded.truncated
        if encoded.examples is not None:  # a row encoded as several (question answering's windows)
            examples[name] = encoded.examples
    meta = {
        "label_names": label_names,
        "pad_token_id": batching.pad_id(tokenizer),
        "dropped": dropped,
        "truncated": truncated,
        "examples": examples,
        **counts,
        "truncation": task.truncation(spec),
        "sizes": {k: len(v) for k, v in tokenized.items()},
    }
    with files.writing(directory, "the data cache ($ADALORA_SEARCH_CACHE)"):
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".tmp-"))
        try:
            _datasets().DatasetDict(tokenized).save_to_disk(str(tmp / "splits"))
            (tmp / "meta.json").write_text(json.dumps(meta))
            try:
                os.replace(tmp, directory)  # atomic
            except OSError:
                if not (directory / "meta.json").exists():  # not another worker that won the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def batches(
    split: Split,
    batch_size: int,
    pad_id: int,
    shuffle_seed: int | None,
    pad_to_multiple_of: int | None = None,
    max_width: int | None = None,
    collate: Collate = batching.collate,
) -> Iterator[dict[str, torch.Tensor]]:
    """Length-grouped, dynamically padded batches (shuffled by bucket when a seed is given), each made by
    ``collate`` (the task's ``Task.collate``; by default ``tasks.batching.collate``).

    ``pad_to_multiple_of``: each batch's width is rounded up to a multiple of it (at most ``max_width``,
    the data's ``max_length``, when the rows are shorter), so a compiled model sees a few shapes.
    Yields ``input_ids`` and ``attention_mask`` [batch, width] (long), ``token_type_ids`` when the
    split has them, and ``labels``: [batch] (long ids or float scores) or [batch, width] (-100 padded).
    """
    lengths = [len(x) for x in split.columns["input_ids"]]
    order = batching.eval_order(split)
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        order = rng.permutation(len(split))
        megabatch = batch_size * 50  # sort inside mega-batches: little padding, still random
        order = np.concatenate(
            [sorted(order[i : i + megabatch], key=lambda j: lengths[j]) for i in range(0, len(order), megabatch)]
        )
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        order_chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    else:
        order_chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in order_chunks:
        yield collate(split, chunk, pad_id, _width(split, chunk, pad_to_multiple_of, max_width))


def _width(split: Split, rows: np.ndarray, multiple: int | None, max_width: int | None) -> int:
    """The batch's width: its longest row, rounded up to ``multiple`` (at most ``max_width``) when given."""
    width = max(len(split.columns["input_ids"][i]) for i in rows)
    if multiple:
        width = max(width, min(-(-width // multiple) * multiple, max_width or width + multiple))
    return width

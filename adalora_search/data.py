"""Data: load a source, split it, tokenize once per (data spec, tokenizer), cache on disk.

Every trial and every worker of a study reads the same cached token ids; batches are padded
per batch (dynamic padding) and grouped by length, because headlines are far shorter than
``max_length``. ``datasets`` is imported only where data is loaded or cached, so the training
loop (``Split``, ``batches``) runs where only torch is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from adalora_search.errors import UserError
from adalora_search.spec import DataSpec, FilesSource, HubSource, PackagedSource

if TYPE_CHECKING:
    import datasets

SPLITS = ("train", "validation", "test")


def _datasets():  # noqa: ANN202 - the module
    import datasets

    datasets.disable_progress_bars()
    return datasets


@dataclass(frozen=True)
class Split:
    """One tokenized split: ragged token ids and labels (int class ids or floats)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)


@dataclass(frozen=True)
class TokenizedData:
    splits: dict[str, Split]
    label_names: list[str] | None  # None for regression
    pad_token_id: int

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names is not None else 1


def cache_root() -> Path:
    return Path(os.environ.get("ADALORA_SEARCH_CACHE", Path.home() / ".cache" / "adalora_search"))


def load_tokenized(spec: DataSpec, tokenizer: Any, regression: bool) -> TokenizedData:
    """Tokenized splits from the disk cache, building (and caching) them on the first call."""
    directory = cache_root() / "data" / _cache_key(spec, tokenizer, regression)
    if not (directory / "meta.json").exists():
        _build_cache(spec, tokenizer, regression, directory)
    meta = json.loads((directory / "meta.json").read_text())
    stored = _datasets().load_from_disk(str(directory / "splits"))
    splits = {name: _to_split(stored[name]) for name in stored}
    return TokenizedData(splits, meta["label_names"], meta["pad_token_id"])


def _to_split(ds: datasets.Dataset) -> Split:
    columns = ds.column_names
    return Split(
        input_ids=list(ds["input_ids"]),
        token_type_ids=list(ds["token_type_ids"]) if "token_type_ids" in columns else None,
        labels=list(ds["label"]),
    )


def _cache_key(spec: DataSpec, tokenizer: Any, regression: bool) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items())).encode()
    identity = {
        "spec": spec.model_dump(mode="json"),
        "regression": regression,
        "tokenizer": type(tokenizer).__name__,
        "vocab": len(tokenizer),
        "vocab_sha": hashlib.sha256(vocab).hexdigest(),
        "lowercase": tokenizer("A")["input_ids"],
        "version": 1,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _build_cache(spec: DataSpec, tokenizer: Any, regression: bool, directory: Path) -> None:
    raw = load_splits(spec, regression)
    label_names = None if regression else sorted({str(v) for v in raw["train"]["label"]})
    tokenized = _datasets().DatasetDict({
        name: _tokenize(ds, spec, tokenizer, label_names, name) for name, ds in raw.items()
    })
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".tmp-"))
    tokenized.save_to_disk(str(tmp / "splits"))
    meta = {"label_names": label_names, "pad_token_id": tokenizer.pad_token_id or 0,
            "sizes": {k: len(v) for k, v in tokenized.items()}}
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, directory)  # atomic: another worker may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _tokenize(ds: datasets.Dataset, spec: DataSpec, tokenizer: Any, label_names: list[str] | None,
              split: str) -> datasets.Dataset:
    texts = [list(ds[f]) for f in spec.text_fields]
    encoded = tokenizer(*texts, truncation=True, max_length=spec.max_length)
    if all(len(ids) <= 2 for ids in encoded["input_ids"]):
        raise UserError(f"data.text_fields = {spec.text_fields}: every text of the {split} split is empty "
                        "(nothing left after tokenization); point text_fields at a column that holds text")
    columns: dict[str, Any] = {"input_ids": encoded["input_ids"]}
    if len(spec.text_fields) == 2 and "token_type_ids" in encoded:
        columns["token_type_ids"] = encoded["token_type_ids"]
    labels = list(ds["label"])
    if label_names is None:
        columns["label"] = [float(v) for v in labels]
    else:
        unknown = sorted({str(v) for v in labels} - set(label_names))
        if unknown:
            raise UserError(f"data.label_field = {spec.label_field!r}: the {split} split has labels {unknown[:5]} "
                            f"that never occur in train ({label_names[:10]}); fix the data or the split")
        index = {name: i for i, name in enumerate(label_names)}
        columns["label"] = [index[str(v)] for v in labels]
    return _datasets().Dataset.from_dict(columns)


def load_splits(spec: DataSpec, regression: bool) -> dict[str, datasets.Dataset]:
    """The raw train/validation(/test) splits with columns ``text_fields`` and ``label``."""
    loaded = _load_source(spec)
    names = spec.splits.model_dump()
    source = {role: loaded[name] for role, name in names.items() if name is not None and name in loaded}
    if "train" not in source:
        raise UserError(f"data.splits.train = {spec.splits.train!r}: the source has splits {sorted(loaded)}; "
                        "name the training split")
    _check_columns(spec, source)
    source = {k: _select(v, spec, regression, k) for k, v in source.items() if k in SPLITS}
    if spec.deduplicate:
        source = {k: _dedupe(v, spec) for k, v in source.items()}
    if spec.split is not None:
        source = _carve(source["train"], spec, regression)
    elif "validation" not in source:
        raise UserError(f"data.split: the source has splits {sorted(source)} but no validation split; "
                        "add `split: {validation: 0.1, test: 0.1, seed: 0}`")
    source = _cap(source, spec)
    for name, ds in source.items():
        if len(ds) == 0:
            raise UserError(f"data: the {name} split is empty; check the source, split fractions and caps")
    return source


def _load_source(spec: DataSpec) -> dict[str, datasets.Dataset]:
    from adalora_search import assets

    src = spec.source
    try:
        if isinstance(src, PackagedSource):
            return dict(assets.load_packaged(src.name))
        if isinstance(src, HubSource):
            return dict(_datasets().load_dataset(src.path, src.name, revision=src.revision))
        return _load_files(src)
    except UserError:
        raise
    except (OSError, ValueError, ConnectionError) as exc:
        raise UserError(f"data.source: cannot load {src.model_dump()}: {type(exc).__name__}: {exc}") from None


def _load_files(src: FilesSource) -> dict[str, datasets.Dataset]:
    for split, path in src.paths.items():
        if not Path(path).exists():
            raise UserError(f"data.source.paths.{split} = {path!r}: no such file; check the path")
    builder = {"jsonl": "json"}.get(src.format, src.format)
    return dict(_datasets().load_dataset(builder, data_files=dict(src.paths)))


def _check_columns(spec: DataSpec, source: dict[str, datasets.Dataset]) -> None:
    for name, ds in source.items():
        for field, column in [("text_fields", c) for c in spec.text_fields] + [("label_field", spec.label_field)]:
            if column not in ds.column_names:
                raise UserError(f"data.{field}: column {column!r} is not in the {name} split; "
                                f"its columns are {ds.column_names}")


def _select(ds: datasets.Dataset, spec: DataSpec, regression: bool, split: str) -> datasets.Dataset:
    columns = {f: [("" if t is None else str(t)) for t in ds[f]] for f in spec.text_fields}
    if not any(text.strip() for texts in columns.values() for text in texts):
        raise UserError(f"data.text_fields = {spec.text_fields}: every text of the {split} split is empty "
                        "(nothing left to tokenize); point text_fields at a column that holds text")
    labels = list(ds[spec.label_field])
    if regression:
        try:
            labels = [float(v) for v in labels]
        except (TypeError, ValueError):
            raise UserError(f"data.label_field = {spec.label_field!r}: model.task is regression but labels "
                            f"are not numbers (e.g. {labels[0]!r}); use task: classification") from None
    columns["label"] = labels
    return _datasets().Dataset.from_dict(columns)


def _dedupe(ds: datasets.Dataset, spec: DataSpec) -> datasets.Dataset:
    seen: set[tuple[str, ...]] = set()
    keep = []
    texts = [list(ds[f]) for f in spec.text_fields]
    for i, key in enumerate(zip(*texts)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return ds.select(keep)


def _carve(train: datasets.Dataset, spec: DataSpec, regression: bool) -> dict[str, datasets.Dataset]:
    from sklearn.model_selection import train_test_split

    split = spec.split
    assert split is not None
    labels = list(train["label"])
    stratify = labels if split.stratify and not regression else None
    if stratify is not None and len(set(labels)) < 2:
        raise UserError(f"data.label_field = {spec.label_field!r}: the data has a single class "
                        f"{labels[0]!r}; classification needs at least two")
    idx = np.arange(len(train))
    try:
        rest, val = train_test_split(idx, test_size=split.validation, random_state=split.seed, stratify=stratify)
        out = {"validation": val}
        if split.test > 0:
            strat_rest = [labels[i] for i in rest] if stratify is not None else None
            rest, test = train_test_split(rest, test_size=split.test / (1 - split.validation),
                                          random_state=split.seed, stratify=strat_rest)
            out["test"] = test
    except ValueError as exc:
        raise UserError(f"data.split: cannot split {len(train)} rows as asked: {exc}; "
                        "use larger fractions, more data, or stratify: false") from None
    return {"train": train.select(sorted(rest)), **{k: train.select(sorted(v)) for k, v in out.items()}}


def _cap(source: dict[str, datasets.Dataset], spec: DataSpec) -> dict[str, datasets.Dataset]:
    out = {}
    for name, ds in source.items():
        cap = spec.max_train_samples if name == "train" else spec.max_eval_samples
        seed = spec.split.seed if spec.split else 0
        out[name] = ds.shuffle(seed=seed).select(range(cap)) if cap and cap < len(ds) else ds
    return out


def batches(split: Split, batch_size: int, pad_id: int, shuffle_seed: int | None,
            regression: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Length-grouped, dynamically padded batches (shuffled by bucket when a seed is given)."""
    order = np.argsort([len(x) for x in split.input_ids], kind="stable")
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        order = rng.permutation(len(split))
        megabatch = batch_size * 50  # sort inside mega-batches: little padding, still random
        order = np.concatenate([sorted(order[i:i + megabatch], key=lambda j: len(split.input_ids[j]))
                                for i in range(0, len(order), megabatch)])
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        order_chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    else:
        order_chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in order_chunks:
        yield _collate(split, chunk, pad_id, regression)


def _collate(split: Split, rows: np.ndarray, pad_id: int, regression: bool) -> dict[str, torch.Tensor]:
    width = max(len(split.input_ids[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long) if split.token_type_ids else None
    for r, i in enumerate(rows):
        n = len(split.input_ids[i])
        ids[r, :n] = torch.tensor(split.input_ids[i])
        mask[r, :n] = 1
        if types is not None:
            types[r, :n] = torch.tensor(split.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask,
             "labels": torch.tensor([split.labels[i] for i in rows],
                                    dtype=torch.float if regression else torch.long)}
    if types is not None:
        batch["token_type_ids"] = types
    return batch

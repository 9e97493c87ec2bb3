"""The raw splits a study trains and evaluates on: pick the source's splits, select the task's columns,
remove repeated rows, carve validation/test out of train, cap the sizes (``datasets`` objects).

``data.py`` tokenizes what this returns and caches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from adalora_search.errors import DataRowError, UserError
from adalora_search.study.spec import DataSpec
from adalora_search.train import sources

if TYPE_CHECKING:
    import datasets

    from adalora_search.tasks import Task

SPLITS = ("train", "validation", "test")


def _datasets():  # noqa: ANN202 - the module
    import datasets

    datasets.disable_progress_bars()
    return datasets


def load_splits(spec: DataSpec, task: Task, counts: dict[str, Any] | None = None) -> dict[str, datasets.Dataset]:
    """The raw train/validation(/test) splits, with the columns ``task.select`` makes.

    ``counts``, when given, receives per source split ``source_rows`` (rows read) and ``duplicates``
    (repeated rows removed), what ``validate`` reports, and ``class_names``: the label column's
    ``ClassLabel`` names in id order (None without them).

    Raises:
        UserError: a missing split or column, unusable rows, an empty split after dedupe and caps.
    """
    loaded = sources.load(spec.source)
    names = spec.splits.model_dump()
    source = {role: loaded[name] for role, name in names.items() if name is not None and name in loaded}
    if "train" not in source:
        raise UserError(
            f"data.splits.train = {spec.splits.train!r}: the source has splits {sorted(loaded)}; "
            "name the training split"
        )
    _check_columns(task.columns(spec), source)
    feature = source["train"].features.get(spec.label_field)
    class_names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    read = {k: len(v) for k, v in source.items() if k in SPLITS}
    source = {k: _select(v, spec, task, k) for k, v in source.items() if k in SPLITS}
    if counts is not None:
        counts["source_rows"].update(read)
        counts["blank_labels"] = {k: read[k] - len(v) for k, v in source.items()}  # drop_blank_labels
        counts["class_names"] = class_names
    if spec.deduplicate:
        deduped = {k: _dedupe(v, task) for k, v in source.items()}
        if counts is not None:
            counts["duplicates"].update({k: len(source[k]) - len(v[0]) for k, v in deduped.items()})
            counts["conflicts"] = {k: v[1] for k, v in deduped.items()}
        source = {k: v[0] for k, v in deduped.items()}
    if spec.split is not None:
        source = _carve(source["train"], spec, task)
    elif "validation" not in source:
        raise UserError(
            f"data.split: the source has splits {sorted(source)} but no validation split; "
            "add `split: {validation: 0.1, test: 0.1, seed: 0}`"
        )
    source = _cap(source, spec)
    for name, ds in source.items():
        if len(ds) == 0:
            raise UserError(f"data: the {name} split is empty; check the source, split fractions and caps")
    return source


def _check_columns(columns: list[tuple[str, str]], source: dict[str, datasets.Dataset]) -> None:
    for name, ds in source.items():
        for field_name, column in columns:
            if column not in ds.column_names:
                joined = len(ds.column_names) == 1 and any(c in ds.column_names[0] for c in ";\t|")
                hint = "; the file seems to use another separator: set data.source.delimiter" if joined else ""
                raise UserError(
                    f"data.{field_name}: column {column!r} is not in the {name} split; "
                    f"its columns are {ds.column_names}{hint}"
                )


def _select(ds: datasets.Dataset, spec: DataSpec, task: Task, split: str) -> datasets.Dataset:
    rows = {column: list(ds[column]) for _, column in task.columns(spec)}
    try:
        return _datasets().Dataset.from_dict(task.select(rows, spec, split, ds.features))
    except DataRowError as exc:  # say where the row is: its file and line
        name = getattr(spec.splits, split)
        raise exc.at(
            sources.row_location(spec.source, name, exc.row)
            or f"row {exc.row + 1} of the {split} split (counting from 1)"
        ) from None


def _dedupe(ds: datasets.Dataset, task: Task) -> tuple[datasets.Dataset, int]:
    """The rows that do not repeat an earlier row (``task.dedupe_key``), and how many of the removed ones
    carried another label than the row they repeat (conflicting labels: the first one is kept).
    """
    seen: dict[Any, Any] = {}
    keep, conflicts = [], 0
    rows = ds.to_dict()
    labels = rows.get("label")
    for i in range(len(ds)):
        key = task.dedupe_key(rows, i)
        label = str(labels[i]) if labels is not None else None
        if key not in seen:
            seen[key] = label
            keep.append(i)
        elif seen[key] != label:
            conflicts += 1
    return ds.select(keep), conflicts


def _carve(train: datasets.Dataset, spec: DataSpec, task: Task) -> dict[str, datasets.Dataset]:
    from sklearn.model_selection import train_test_split

    split = spec.split
    assert split is not None
    labels = list(train["label"]) if task.stratify else []
    stratify = labels if split.stratify and task.stratify else None
    if stratify is not None and len(set(labels)) < 2:
        raise UserError(
            f"data.label_field = {spec.label_field!r}: the data has a single class "
            f"{labels[0]!r}; classification needs at least two"
        )
    idx = np.arange(len(train))
    try:
        rest, val = train_test_split(idx, test_size=split.validation, random_state=split.seed, stratify=stratify)
        out = {"validation": val}
        if split.test > 0:
            strat_rest = [labels[i] for i in rest] if stratify is not None else None
            rest, test = train_test_split(
                rest, test_size=split.test / (1 - split.validation), random_state=split.seed, stratify=strat_rest
            )
            out["test"] = test
    except ValueError as exc:
        raise UserError(
            f"data.split: cannot split {len(train)} rows as asked ({str(exc).split(';')[0]}); "
            "use larger fractions, more data, or stratify: false (data.deduplicate removes "
            "repeated rows first)"
        ) from None
    return {"train": train.select(sorted(rest)), **{k: train.select(sorted(v)) for k, v in out.items()}}


def _cap(source: dict[str, datasets.Dataset], spec: DataSpec) -> dict[str, datasets.Dataset]:
    out = {}
    for name, ds in source.items():
        cap = spec.max_train_samples if name == "train" else spec.max_eval_samples
        seed = spec.split.seed if spec.split else 0
        out[name] = ds.shuffle(seed=seed).select(range(cap)) if cap and cap < len(ds) else ds
    return out

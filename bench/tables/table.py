"""The table file: real trials of a grid, per configuration and training seed (``bench/build_table.py``).

A table is gzipped JSON, ``format`` = ``TABLE_FORMAT``::

    {"name", "study_file" (the grid study file's text), "space" (knob -> its choices, Optuna-encoded),
     "objective" {"metric", "direction"}, "seeds", "data" (split -> rows), "total_steps", "commit", "built",
     "machine", "order_seed", "cpu_hours",
     "configs": [{"params": {knob: value}, "runs": {"<seed>": RUN}}, ...]}
    RUN = {"state" (COMPLETE | FAIL), "validation" {metric: value}, "test" {metric: value},
           "curve" [{"step", <metric>, "eval_loss"}, ...] (every evaluation), "steps" (optimizer steps),
           "wall_s", "timing", "rank_allocation" {module: rank}, "trainable_params", "failure"}

``read_table`` checks that every configuration's parameters lie in the space the table claims: a table
whose configurations do not match its space is refused (``TableError``), not replayed.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

TABLE_FORMAT = "adalora-search-table/1"


class TableError(ValueError):
    """A table file that cannot be replayed as it claims."""


def write_table(table: dict[str, Any], path: Path) -> None:
    """Write ``table`` to ``path`` (gzipped JSON) atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(json.dumps(table, separators=(",", ":"), sort_keys=True).encode())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The table at ``path``, checked: its format, and every configuration's parameters inside its space.

    Raises ``TableError`` naming the file and the first mismatch.
    """
    with gzip.open(path, "rt") as f:
        table = json.load(f)
    check_table(table, str(path))
    return table


def check_table(table: dict[str, Any], where: str = "table") -> None:
    """``TableError`` unless every configuration has one value per knob of ``space``, each among its choices,
    no configuration appears twice, and every run names a seed the table lists."""
    if table.get("format") != TABLE_FORMAT:
        raise TableError(f"{where}: format must be {TABLE_FORMAT!r}, but got {table.get('format')!r}")
    space, seeds = table["space"], {str(s) for s in table["seeds"]}
    seen = set()
    for i, config in enumerate(table["configs"]):
        params = config["params"]
        if set(params) != set(space):
            raise TableError(
                f"{where}: configuration {i} has knobs {sorted(params)}, but the space has {sorted(space)}"
            )
        for knob, value in params.items():
            if value not in space[knob]:
                raise TableError(f"{where}: configuration {i}: {knob} = {value!r} is not in its choices {space[knob]}")
        k = tuple(sorted(params.items()))
        if k in seen:
            raise TableError(f"{where}: configuration {i} repeats {dict(k)}")
        seen.add(k)
        if not set(config["runs"]) <= seeds:
            raise TableError(
                f"{where}: configuration {i} has runs of seeds {sorted(config['runs'])}, not in {sorted(seeds)}"
            )

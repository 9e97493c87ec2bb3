"""One training run: data (tokenized once, cached), the model and its PEFT wrapping, the rank
allocator and its bookkeeping, the engine, and the task registry (``tasks``).

Public names are imported on first use (``from adalora_search.train import TrialRun``), so importing
the package stays light and free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrialRun": "engine",
    "RunResult": "engine",
    "TokenizedData": "data",
    "load_tokenized": "data",
    "batches": "data",
    "build_base": "modeling",
    "load_tokenizer": "modeling",
    "adalora_config": "modeling",
    "BatchedRankAllocator": "allocator",
    "RankBook": "allocator",
    "resolve_model": "assets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

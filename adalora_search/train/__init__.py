"""One training run: data (tokenized once, cached), the model and its PEFT wrapping, the rank
allocator and its bookkeeping, and the engine (the task registry is ``adalora_search.tasks``).

Public names are imported on first use (``from adalora_search.train import TrialRun``), so importing
the package stays light and free of import cycles.
"""

from adalora_search._lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
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
    },
)

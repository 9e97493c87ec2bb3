"""The search: the Optuna objective, workers and their storage, fingerprints, the one ranking of
trials and the typed record every reader of a trial uses.

Public names are imported on first use (``from adalora_search.search import Objective``), so importing
the package stays light and free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Objective": "objective",
    "work": "runner",
    "open_study": "runner",
    "prepare_data": "runner",
    "run_session": "session",
    "locate": "session",
    "TrialRecord": "record",
    "ranked": "ranking",
    "best": "ranking",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

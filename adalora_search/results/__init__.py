"""After the search: reference runs and the summary, tables, plots and the report, export of a
trial's allocation as PEFT configs, and retraining an export.

Public names are imported on first use (``from adalora_search.results import write_report``), so importing
the package stays light and free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "write_report": "report",
    "export_trial": "export",
    "retrain": "retrain",
    "run_references": "references",
    "summary_lines": "references",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

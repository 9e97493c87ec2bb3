"""The study file: its pydantic models, knobs and samplers, safe loading, the rules on the space, and
the search space that turns a trial into a ``TrialConfig``.

Public names are imported on first use (``from adalora_search.study import StudySpec``), so importing
the package stays light and free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StudySpec": "spec",
    "load_spec": "loader",
    "parse_spec": "loader",
    "TrialConfig": "space",
    "sample": "space",
    "trial_config": "space",
    "KNOBS": "space",
    "optimizer_steps": "space",
    "tunable": "distributions",
    "Frozen": "frozen",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

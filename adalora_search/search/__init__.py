"""The search: the Optuna objective, workers and their storage, fingerprints, the one ranking of
trials and the typed record every reader of a trial uses.

Public names are imported on first use (``from adalora_search.search import Objective``), so importing
the package stays light and free of import cycles.
"""

from adalora_search._lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
        "Objective": "objective",
        "work": "runner",
        "open_study": "runner",
        "prepare_data": "runner",
        "status_lines": "status",
        "summary_lines": "status",
        "TrialRecord": "record",
        "ranked": "ranking",
        "best": "ranking",
    },
)

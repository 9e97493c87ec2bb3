"""After the search: reference runs and the summary, tables, plots and the report, export of a
trial's allocation as PEFT configs, and retraining an export.

Public names are imported on first use (``from adalora_search.results import write_report``), so importing
the package stays light and free of import cycles.
"""

from adalora_search._lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
        "write_report": "report",
        "export_trial": "export",
        "retrain": "retrain",
        "run_references": "references",
    },
)

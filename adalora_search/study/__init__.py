"""The study file: its pydantic models, knobs and samplers, safe loading, the rules on the space, and
the search space that turns a trial into a ``TrialConfig``.

Public names are imported on first use (``from adalora_search.study import StudySpec``), so importing
the package stays light and free of import cycles.
"""

from adalora_search._lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
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
    },
)

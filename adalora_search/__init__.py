"""adalora-search: declarative AutoML for AdaLoRA fine-tuning (Optuna + PEFT).

The Python API (``adalora_search.api``), imported on first use so that ``import adalora_search`` stays
light and changes no global state::

    import adalora_search as als

    spec = als.load_study_spec("studies/smoke.yaml")
    result = als.run(spec, n_trials=2)
    result.best.rank_allocation
"""

from adalora_search._lazy import exports

__version__ = "0.1.0"

__getattr__, __all__ = exports(
    __name__,
    {
        **dict.fromkeys(
            [
                "load_study_spec",
                "validate",
                "run",
                "status",
                "report",
                "export",
                "retrain",
                "Validation",
                "StudyResult",
                "Report",
                "Export",
            ],
            "api",
        ),
        "StudySpec": "study.spec",
        "TrialRecord": "search.record",
        "ReferenceResult": "search.record",
        "ExportManifest": "results.manifest",
        "RetrainResult": "results.retrain",
        "Problem": "errors",
        "UserError": "errors",
    },
)

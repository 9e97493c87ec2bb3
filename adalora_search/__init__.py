"""adalora-search: declarative AutoML for AdaLoRA fine-tuning (Optuna + PEFT).

The Python API (``adalora_search.api``), imported on first use so that ``import adalora_search`` stays
light and changes no global state::

    import adalora_search as als

    spec = als.load_study_spec("studies/smoke.yaml")
    result = als.run(spec, n_trials=2)
    result.best.rank_allocation
"""

from typing import TYPE_CHECKING

from adalora_search._lazy import exports

if TYPE_CHECKING:  # what editors and type checkers see (Optuna's __init__ does the same: LSP jumps to the sources)
    from adalora_search.api import Export as Export
    from adalora_search.api import Report as Report
    from adalora_search.api import StudyResult as StudyResult
    from adalora_search.api import Validation as Validation
    from adalora_search.api import export as export
    from adalora_search.api import load_study_spec as load_study_spec
    from adalora_search.api import report as report
    from adalora_search.api import retrain as retrain
    from adalora_search.api import run as run
    from adalora_search.api import status as status
    from adalora_search.api import validate as validate
    from adalora_search.errors import Problem as Problem
    from adalora_search.errors import UserError as UserError
    from adalora_search.results.manifest import ExportManifest as ExportManifest
    from adalora_search.results.retrain import RetrainResult as RetrainResult
    from adalora_search.search.record import ReferenceResult as ReferenceResult
    from adalora_search.search.record import TrialRecord as TrialRecord
    from adalora_search.study.spec import StudySpec as StudySpec

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

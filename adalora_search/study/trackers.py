"""The study file's ``tracking`` section: experiment trackers fed by every trial (search/tracking.py)."""

from __future__ import annotations

from pydantic import Field

from adalora_search.study.frozen import Frozen


class MlflowSpec(Frozen):
    """One MLflow run per trial: params, curves at every evaluation, final metrics, rank allocation."""

    enabled: bool = Field(default=False, description="log every trial to MLflow")
    tracking_uri: str = Field(
        default="sqlite:///mlruns.db",
        min_length=1,
        description="any MLflow tracking URI; a relative sqlite "
        "path or directory is relative to the study file (no server needed); experiment = study.name",
    )


class TensorBoardSpec(Frozen):
    """TensorBoard scalars of every trial: the curves at each evaluation and the final metrics."""

    enabled: bool = Field(default=False, description="write TensorBoard event files of every trial")
    log_dir: str = Field(
        default="tensorboard",
        min_length=1,
        description="relative to the study file; one directory per study and trial below it",
    )


class TrackingSpec(Frozen):
    """``tracking``: experiment trackers fed by every trial (off by default; ``adalora-search[tracking]``)."""

    mlflow: MlflowSpec = Field(default=MlflowSpec(), description="MLflow: one run per trial")
    tensorboard: TensorBoardSpec = Field(default=TensorBoardSpec(), description="TensorBoard event files")

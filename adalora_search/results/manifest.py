"""``rank_config.json`` / ``.yaml``: what an export records of its trial, written by ``export`` and read
back, typed, by ``retrain``, ``export --relocate``, the model card and the Python API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adalora_search.errors import UserError

MANIFEST_FILE = "rank_config.json"


class LoraLearningRate(BaseModel):
    """The learning rate recommended for the exported LoRA: the study's ``lora`` reference's, else none.

    ``tried``: the rates the reference chose ``value`` from on validation.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    value: float | None = None
    source: str = "-"
    of_trial: int | None = None
    tried: list[float] = Field(default_factory=list)


class ExportManifest(BaseModel):
    """An exported trial: its metrics, its final rank allocation, the base model its configs name, its config.

    ``metrics``: "final" / "best" (validation) and "test" -> metric -> value; ``rank_allocation``:
    adapted module -> final rank; ``config``: the trial's ``TrialConfig`` as JSON; ``complete``: False
    when the trial was trial-pruned or still running (its allocation is where rank pruning had got to).
    Unknown keys (an export from a newer version) are ignored when read.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    study: str
    trial: int
    state: str
    baseline: str | None = None
    values: list[float] | None = None
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)  # as stored (counts stay integers)
    model: str
    task: str
    label_names: list[str] | None = None
    base_model_name_or_path: str | None = None
    target_modules: list[str] | str
    init_r: int
    target_r: int
    lora_alpha: int | float
    rank_allocation: dict[str, int]
    lora_learning_rate: LoraLearningRate = Field(default_factory=LoraLearningRate)
    trainable_params: dict[str, int] = Field(default_factory=dict)
    total_steps: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any]
    complete: bool = True
    steps_trained: int | None = None
    data_content: Any = None  # the data files' content hashes when the trial trained (search/fingerprint.py)
    adapter_failure: str | None = None

    def metric(self, which: str, name: str) -> float | None:
        """``which`` ("final", "best", "test") value of metric ``name``, or None."""
        return self.metrics.get(which, {}).get(name)

    def as_json(self) -> dict[str, Any]:
        """The object written to ``rank_config.json`` (and, in this order, to ``rank_config.yaml``): values as
        stored (a non-finite metric stays NaN, as ``json.dumps`` writes it).
        """
        return self.model_dump()


def manifest_path(out: Path, field: str) -> Path:
    """``out``'s ``rank_config.json`` (read as it is by ``--relocate``: an export of any version).

    Raises:
        UserError: naming ``field`` when ``out`` holds no export.
    """
    path = out / MANIFEST_FILE
    if not path.is_file():
        raise UserError(
            f"{field} = {str(out)!r}: no {MANIFEST_FILE} there; name a folder written by `adalora-search export`"
        )
    return path


def read_manifest(out: Path, field: str) -> ExportManifest:
    """An export's ``rank_config.json``, typed (what ``retrain`` and the API start from).

    Raises:
        UserError: naming ``field`` when ``out`` holds no export, or one this version cannot read.
    """
    path = manifest_path(out, field)
    try:
        return ExportManifest.model_validate(json.loads(path.read_text()))
    except ValueError as exc:  # JSONDecodeError, pydantic's ValidationError
        raise UserError(
            f"{field} = {str(out)!r}: {MANIFEST_FILE} cannot be read ({str(exc).splitlines()[0]}); "
            "export the trial again"
        ) from None

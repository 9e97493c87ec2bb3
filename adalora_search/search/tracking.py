"""Experiment tracking: one MLflow run and/or one TensorBoard log directory per trial (``tracking``).

The objective feeds a trial's ``TrialTracking``: ``start`` when the trial starts (params: its full
config flattened to knob paths, with the sampled params), ``log`` at every evaluation (the engine's
scores: ``train_loss``, the task's metrics, ``budget`` = total rank), ``finish`` when it ends
(``final/``, ``best/``, ``test/`` metrics, ``trainable_params/``, and the final rank allocation as
``rank_allocation.json``; the run's status from how the trial ended).

MLflow is driven through ``MlflowClient`` (no global active run, so a worker can run trial after
trial). optuna-integration's ``MLflowCallback`` / ``track_in_mlflow`` do not fit: the callback logs
once a trial has ended (no curves) and both hang on ``study.optimize``, which the ask/tell workers
do not use. TensorBoard through ``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard``
package, which also shows the logs). Both are imported only when enabled. A tracker that stops
working mid-study (a server gone) is warned about and switched off; it never fails a trial.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import optuna

from adalora_search.errors import UserError
from adalora_search.study.space import TrialConfig
from adalora_search.study.trackers import TrackingSpec
from adalora_search.urls import mask, redact

INSTALL = 'pip install "adalora-search[tracking]"'
ALLOCATION_FILE = "rank_allocation.json"
_MAX_PARAM = 6000  # MLflow's longest param value
_log = logging.getLogger(__name__)


def _require(module: str, field: str) -> Any:
    """Import ``module`` or raise ``UserError`` naming the field that asked for it and the install line."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{field} = true: {exc.name or module} is not installed; {INSTALL}") from None


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as knob paths -> text (lists comma-joined, as Optuna stores list choices)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return out


def _numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"
    }


class _Mlflow:
    """One MLflow run of one trial."""

    def __init__(self, client: Any, experiment_id: str, trial: optuna.Trial, cfg: TrialConfig):
        from mlflow.entities import Param

        self.client = client
        tags = {
            "optuna.study": trial.study.study_name,
            "optuna.trial": str(trial.number),
            "sampled": ",".join(sorted(trial.params)),
        }
        if trial.user_attrs.get("baseline"):
            tags["baseline"] = str(trial.user_attrs["baseline"])
        self.run_id = client.create_run(experiment_id, run_name=f"trial-{trial.number}", tags=tags).info.run_id
        sampled = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in trial.params.items()}
        params = [Param(k, v[:_MAX_PARAM]) for k, v in {**flat(cfg.model_dump(mode="json")), **sampled}.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self, allocation: dict[str, int], state: str) -> None:
        if allocation:
            self.client.log_dict(self.run_id, allocation, ALLOCATION_FILE)
        self.client.set_tag(self.run_id, "optuna.state", state)
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "INTERRUPTED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(self.run_id, status=status)


class _Board:
    """One TensorBoard log directory of one trial: ``<log_dir>/<study>/trial_<number>``."""

    def __init__(self, log_dir: str, trial: optuna.Trial, cfg: TrialConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(log_dir) / trial.study.study_name / f"trial_{trial.number}"))
        self.writer.add_text("config", f"```\n{json.dumps(cfg.model_dump(mode='json'), indent=2)}\n```")

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def close(self, allocation: dict[str, int], state: str) -> None:
        if allocation:
            self.writer.add_text("rank_allocation", f"```\n{json.dumps(allocation, indent=2)}\n```")
        self.writer.add_text("state", state)
        self.writer.close()


class TrialTracking:
    """The trackers of one running trial; a tracker that fails is warned about once and dropped."""

    def __init__(self, number: int, sinks: list[Any]):
        self.number = number
        self.sinks = sinks
        self.last_step = 0

    def _each(self, call: str, *args: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, call)(*args)
            except Exception as exc:  # noqa: BLE001 - tracking must never fail a trial
                _log.warning(
                    "trial %d: %s tracking stopped (%s: %s)",
                    self.number,
                    type(sink).__name__.strip("_"),
                    type(exc).__name__,
                    str(exc)[:300],
                )
                self.sinks.remove(sink)

    def log(self, step: int, scores: dict[str, Any]) -> None:
        """The scores of one evaluation at optimizer ``step`` (train_loss, task metrics, budget)."""
        self.last_step = step
        self._each("log", step, _numbers(scores))

    def finish(self, result: Any, exc: BaseException | None) -> None:
        """Final metrics, trainable params and rank allocation of ``result`` (a ``RunResult`` or None);
        the run's state from ``exc``, the exception that ended the trial (None: it completed).
        """
        state = (
            "COMPLETE"
            if exc is None
            else "PRUNED"
            if isinstance(exc, optuna.TrialPruned)
            else "INTERRUPTED"
            if isinstance(exc, KeyboardInterrupt)
            else "FAIL"
        )
        allocation: dict[str, int] = {}
        if result is not None:
            values: dict[str, float] = {}
            for which in ("final", "best", "test"):
                values.update(_numbers(result.metrics.get(which, {}), f"{which}/"))
            values.update(_numbers(result.trainable_params, "trainable_params/"))
            step = int(result.timing.get("steps") or self.last_step)
            self._each("log", step, {k: v for k, v in values.items() if math.isfinite(v)})
            allocation = dict(result.rank_allocation)
        self._each("close", allocation, state)


class Tracker:
    """The study's trackers (``TrackingSpec``); ``start`` opens one ``TrialTracking`` per trial.

    Raises ``UserError`` (exit 2) when an enabled tracker is not installed (naming
    ``pip install "adalora-search[tracking]"``) or the MLflow store cannot be opened.
    """

    def __init__(self, spec: TrackingSpec, study_name: str):
        self.spec = spec
        self.client: Any = None
        self.experiment_id = ""
        if spec.mlflow.enabled:
            _require("mlflow", "tracking.mlflow.enabled")
            self.client, self.experiment_id = _experiment(spec.mlflow.tracking_uri, study_name)
        if spec.tensorboard.enabled:
            _require("torch.utils.tensorboard", "tracking.tensorboard.enabled")

    def start(self, trial: optuna.Trial, cfg: TrialConfig) -> TrialTracking:
        """Open this trial's MLflow run and TensorBoard writer (those enabled)."""
        sinks = []
        if self.client is not None:
            sinks.append(_start(trial, _Mlflow, self.client, self.experiment_id, trial, cfg))
        if self.spec.tensorboard.enabled:
            sinks.append(_start(trial, _Board, self.spec.tensorboard.log_dir, trial, cfg))
        return TrialTracking(trial.number, [s for s in sinks if s is not None])


def _start(trial: optuna.Trial, kind: type, *args: Any) -> Any:
    try:
        return kind(*args)
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a trial
        _log.warning(
            "trial %d: %s tracking not started (%s: %s)",
            trial.number,
            kind.__name__.strip("_"),
            type(exc).__name__,
            str(exc)[:300],
        )
        return None


def _experiment(uri: str, name: str) -> tuple[Any, str]:
    """The MLflow client and the id of experiment ``name`` (created, or restored if deleted)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client, client.create_experiment(name, artifact_location=_artifact_location(uri, name))
            except MlflowException:  # another worker created it first, or the store cannot be written
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
            _log.warning(
                f"MLflow experiment {name!r} (id {experiment.experiment_id}) had been deleted; restored it "
                "to log this study's runs there (delete it for good with `mlflow gc`, or name another "
                "study, to start afresh)"
            )
        return client, experiment.experiment_id
    except Exception as exc:  # noqa: BLE001 - whatever the store raises, the user fixes the URI or the server
        reason = redact(str(exc).splitlines()[0][:200], uri) if str(exc) else ""
        raise UserError(
            f"tracking.mlflow.tracking_uri = {mask(uri)!r}: cannot open the MLflow store "
            f"({type(exc).__name__}: {reason}); check the URI (e.g. sqlite:///mlruns.db, "
            "a directory, or http://host:5000 with the server running)"
        ) from None


def _artifact_location(uri: str, name: str) -> str | None:
    """Run artifacts of a local sqlite store go beside it (``mlartifacts/<study>``), not into the working
    directory (MLflow's default); a server decides for itself.
    """
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts" / name).as_uri()

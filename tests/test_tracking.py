"""``tracking``: one MLflow run and one TensorBoard log directory per trial, with the curves at every
evaluation, the final metrics and the rank allocation; a tracker that is not installed exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import run_cli, study_dict, write_study

from adalora_search.app.session import run_session
from adalora_search.errors import UserError
from adalora_search.search.tracking import INSTALL, Tracker
from adalora_search.study.trackers import TrackingSpec

BOTH = {"mlflow": {"enabled": True}, "tensorboard": {"enabled": True}}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict[str, Any]:
    """A 2-trial study with both trackers at their default places, run from another working directory."""
    root = tmp_path_factory.mktemp("tracked")
    path = write_study(
        root / "",
        study_dict(
            study={"n_trials": 2, "sampler": {"type": "random", "seed": 3}},
            training={"learning_rate": {"low": 1e-3, "high": 2e-2, "log": True}},
            tracking=BOTH,
        ),
    )
    elsewhere = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)  # the default stores go beside the study file, not into the working directory
        run_session(str(path), None, None, None, 1, [])
    assert not list(elsewhere.iterdir())
    return {"root": root, "study": optuna.load_study(study_name="t", storage=f"sqlite:///{root / 'study.db'}")}


def test_mlflow_has_one_run_per_trial_with_params_curves_and_allocation(tracked, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked['root'] / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("t")
    runs = {int(r.data.tags["optuna.trial"]): r for r in client.search_runs([experiment.experiment_id])}
    trials = tracked["study"].trials
    assert sorted(runs) == [t.number for t in trials] == [0, 1]
    for trial in trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        params = run.data.params
        assert params["training.learning_rate"] == str(trial.params["training.learning_rate"])  # sampled
        assert params["adalora.init_r"] == "4" and params["model.task"] == "classification"  # the config
        history = trial.user_attrs["history"]
        for key in ("train_loss", "accuracy", "eval_loss", "budget"):
            curve = client.get_metric_history(run.info.run_id, key)
            assert [(m.step, m.value) for m in curve] == [(h["step"], pytest.approx(h[key])) for h in history]
        final = trial.user_attrs["metrics"]
        assert run.data.metrics["final/accuracy"] == pytest.approx(final["final"]["accuracy"])
        assert run.data.metrics["test/accuracy"] == pytest.approx(final["test"]["accuracy"])
        assert run.data.metrics["trainable_params/final"] == trial.user_attrs["trainable_params"]["final"]
        local = client.download_artifacts(run.info.run_id, "rank_allocation.json", str(tmp_path))
        assert json.loads(Path(local).read_text()) == trial.user_attrs["rank_allocation"]
    assert (tracked["root"] / "mlartifacts" / "t").is_dir()  # beside the store, not in the working directory


def test_tensorboard_event_files_hold_the_curves(tracked) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for trial in tracked["study"].trials:
        events = EventAccumulator(str(tracked["root"] / "tensorboard" / "t" / f"trial_{trial.number}"))
        events.Reload()
        history = trial.user_attrs["history"]
        for key in ("train_loss", "accuracy", "budget"):
            assert [(e.step, e.value) for e in events.Scalars(key)] == [
                (h["step"], pytest.approx(h[key], rel=1e-6)) for h in history
            ]
        (final,) = events.Scalars("final/accuracy")
        assert final.value == pytest.approx(trial.user_attrs["metrics"]["final"]["accuracy"], rel=1e-6)
        (text,) = events.Tensors("rank_allocation/text_summary")
        shown = text.tensor_proto.string_val[0].decode().strip("`\n")  # markdown: the JSON in a code block
        assert json.loads(shown) == trial.user_attrs["rank_allocation"]


@pytest.mark.parametrize(
    "tracker, blocked", [("mlflow", ["mlflow"]), ("tensorboard", ["tensorboard", "torch.utils.tensorboard"])]
)
def test_an_enabled_tracker_that_is_not_installed_names_the_extra(
    tracker: str, blocked: list[str], monkeypatch
) -> None:
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # as on a machine without the tracking extra
    with pytest.raises(UserError) as info:
        Tracker(TrackingSpec.model_validate({tracker: {"enabled": True}}), "t")
    assert f"tracking.{tracker}.enabled = true" in str(info.value) and INSTALL in str(info.value)


def test_run_with_tracking_but_no_mlflow_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(tracking={"mlflow": {"enabled": True}}))
    monkeypatch.setitem(sys.modules, "mlflow", None)
    code, said = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 2 and 'pip install "adalora-search[tracking]"' in said and "Traceback" not in said


def test_tracking_is_off_by_default_and_imports_nothing(monkeypatch) -> None:
    for module in ("mlflow", "tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, module, None)
    tracker = Tracker(TrackingSpec(), "t")  # no tracker: nothing is imported, nothing fails
    assert tracker.client is None and not tracker.spec.tensorboard.enabled


def test_a_bad_mlflow_store_is_a_user_error() -> None:
    uri = "sqlite:////proc/adalora-search-mlflow/mlruns.db"  # /proc refuses new files to every user, root too
    with pytest.raises(UserError, match="tracking.mlflow.tracking_uri"):
        Tracker(TrackingSpec.model_validate({"mlflow": {"enabled": True, "tracking_uri": uri}}), "t")


def test_a_deleted_mlflow_experiment_is_restored_with_a_line_saying_so(tmp_path: Path, caplog, monkeypatch) -> None:
    """Issue #21 item 7: the restore happened silently."""
    import logging

    from mlflow import MlflowClient

    from adalora_search.search.tracking import _experiment

    monkeypatch.setattr(logging.getLogger("adalora_search"), "propagate", True)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("t"))
    with caplog.at_level(logging.WARNING):
        _, experiment_id = _experiment(uri, "t")
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert "MLflow experiment 't'" in caplog.text and "had been deleted; restored it" in caplog.text

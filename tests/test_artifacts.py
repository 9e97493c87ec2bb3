"""Kept adapters live in an Optuna artifact store: export finds them from the study storage alone,
on any machine that sees the store; optuna-dashboard lists them with the study's metric names.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
import uuid
import wsgiref.util
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import cli_exit_code, run_cli, study_dict, write_study
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from peft import PeftModel

from adalora_search.app.session import run_session
from adalora_search.errors import UserError
from adalora_search.search.artifacts import open_store
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec, parse_spec
from adalora_search.study.space import TrialConfig
from adalora_search.train.data import batches
from adalora_search.train.modeling import build_base


def kept_study(name: str = "t") -> dict[str, Any]:
    """Two baselines, the second better on eval_loss: it pushes the first adapter out of the top-1."""
    return study_dict(
        study={
            "name": name,
            "n_trials": 2,
            "keep_top_k_adapters": 1,
            "artifact_store": "../shared/store",
            "objective": {"metric": "eval_loss"},
        },
        baselines=[
            {"name": "slow", "params": {"training.learning_rate": 1e-4}},
            {"name": "fast", "params": {"training.learning_rate": 2e-2}},
        ],
    )


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> dict[str, Any]:
    """A study run in ``work/`` (study file) with its storage in ``db/`` and its artifact store in ``shared/``."""
    root = tmp_path_factory.mktemp("kept")
    (root / "work").mkdir()
    (root / "db").mkdir()
    path = write_study(root / "work", kept_study())
    url = f"sqlite:///{root / 'db' / 'study.db'}"
    run_session(str(path), None, None, url, 1, [])
    return {
        "root": root,
        "url": url,
        "spec": load_spec(path),
        "store": root / "shared" / "store",
        "study": optuna.load_study(study_name="t", storage=url),
    }


def adapter_artifacts(study: optuna.Study, number: int) -> list:
    trial = study.trials[number]
    return [m for m in get_all_artifact_meta(trial, storage=study._storage) if m.filename == "adapter.tar.gz"]


def validation_loss(adapter: Path, cfg: TrialConfig, data) -> float:
    """Mean cross-entropy of the base model + the adapter loaded by PEFT on the validation split."""
    model = PeftModel.from_pretrained(build_base(cfg.model, data.label_names, cfg.training.seed), str(adapter)).eval()
    loss = 0.0
    with torch.no_grad():
        for batch in batches(data.splits["validation"], 64, data.pad_token_id, None):
            labels = batch.pop("labels")
            loss += float(torch.nn.functional.cross_entropy(model(**batch).logits, labels, reduction="sum"))
    return loss / len(data.splits["validation"])


def check_exported_adapter(out: Path, study: optuna.Study, data) -> None:
    rank_config = json.loads((out / "rank_config.json").read_text())
    assert (out / "adapter" / "adapter_config.json").exists()
    cfg = TrialConfig.model_validate(rank_config["config"])
    recorded = study.trials[rank_config["trial"]].user_attrs["metrics"]["final"]["eval_loss"]
    # continuous: it only matches if every adapter weight and the head came back from the store
    assert validation_loss(out / "adapter", cfg, data) == pytest.approx(recorded, rel=1e-5)


def test_kept_adapter_is_an_optuna_artifact_and_the_pushed_out_one_is_removed(kept) -> None:
    study = kept["study"]
    slow, fast = study.trials
    assert fast.value < slow.value  # the premise: the second baseline is better on eval_loss
    assert len(adapter_artifacts(study, 0)) == 1 and len(adapter_artifacts(study, 1)) == 1
    assert fast.user_attrs["dropped_adapters"] == [0]
    assert fast.user_attrs["adapter_store"] == str(kept["store"])
    files = sorted(p.name for p in kept["store"].iterdir())
    assert files == [adapter_artifacts(study, 1)[0].artifact_id]  # trial 0's file is gone, trial 1's is there


def test_export_from_the_storage_alone_brings_the_adapter(kept, tmp_path: Path, monkeypatch, capsys) -> None:
    data = prepare_data(kept["spec"])
    shutil.rmtree(kept["root"] / "work")  # the study file and any local working directory are gone
    monkeypatch.chdir(tmp_path)
    code, said = run_cli(["export", "--storage", kept["url"], "--study", "t", "--out", "export"], monkeypatch, capsys)
    assert code == 0, said
    check_exported_adapter(tmp_path / "export", kept["study"], data)
    # the trial pushed out of the top-k: exported without adapter/, and said so
    code, said = run_cli(
        ["export", "--storage", kept["url"], "--study", "t", "--out", "t0", "--trial", "0"], monkeypatch, capsys
    )
    assert code == 0 and not (tmp_path / "t0" / "adapter").exists()
    assert "trial 1 pushed it out" in said  # the CLI's warning on stderr


def test_an_adapter_missing_from_the_store_fails_export_saying_where_it_looked(
    kept, tmp_path: Path, monkeypatch, capsys
) -> None:
    artifact = adapter_artifacts(kept["study"], 1)[0].artifact_id
    stored = kept["store"] / artifact
    stored.rename(tmp_path / artifact)
    try:
        code, said = run_cli(
            ["export", "--storage", kept["url"], "--study", "t", "--out", str(tmp_path / "x")], monkeypatch, capsys
        )
    finally:
        (tmp_path / artifact).rename(stored)
    assert code == 2 and "Traceback" not in said
    assert artifact in said and str(kept["store"]) in said and "reachable" in said
    assert not (tmp_path / "x").exists()


def wsgi_get(app, path: str) -> tuple[str, bytes]:
    """GET ``path`` from a WSGI app in this process (what a browser asks optuna-dashboard's server)."""
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], body


def test_optuna_dashboard_lists_the_metric_names_and_the_kept_adapter(kept) -> None:
    import optuna_dashboard

    app = optuna_dashboard.wsgi(kept["url"], artifact_store=FileSystemArtifactStore(kept["store"]))
    status, body = wsgi_get(app, "/api/studies")
    assert status.startswith("200")
    study_id = next(s["study_id"] for s in json.loads(body)["study_summaries"] if s["study_name"] == "t")
    status, body = wsgi_get(app, f"/api/studies/{study_id}")
    detail = json.loads(body)
    assert status.startswith("200") and detail["objective_names"] == ["eval_loss"]
    best = next(t for t in detail["trials"] if t["number"] == 1)
    (artifact,) = best["artifacts"]
    assert artifact["filename"] == "adapter.tar.gz"
    status, body = wsgi_get(app, f"/artifacts/{study_id}/{best['trial_id']}/{artifact['artifact_id']}")
    assert status.startswith("200")
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:  # the adapter as the dashboard hands it out
        names = {Path(n).name for n in tar.getnames()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names


@pytest.mark.slow
def test_export_of_a_postgresql_study_from_another_directory(pg_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    name = f"kept_{uuid.uuid4().hex[:8]}"
    (tmp_path / "work").mkdir()
    path = write_study(tmp_path / "work", kept_study(name))
    spec = load_spec(path)
    run_session(str(path), None, None, pg_url, 1, [])
    shutil.rmtree(tmp_path / "work")
    monkeypatch.chdir(tmp_path)
    code, said = run_cli(["export", "--storage", pg_url, "--study", name, "--out", "export"], monkeypatch, capsys)
    assert code == 0, said
    check_exported_adapter(tmp_path / "export", optuna.load_study(study_name=name, storage=pg_url), prepare_data(spec))


def test_artifact_store_locations_are_checked(tmp_path: Path, monkeypatch) -> None:
    text = json.dumps(study_dict(study={"keep_top_k_adapters": 1, "artifact_store": "gs://bucket"}))
    with pytest.raises(UserError, match="study.artifact_store") as info:
        parse_spec(text)
    assert "s3://BUCKET" in str(info.value)
    with pytest.raises(UserError, match="s3://BUCKET"):
        parse_spec(json.dumps(study_dict(study={"artifact_store": "s3://bucket/prefix"})))
    monkeypatch.setitem(sys.modules, "boto3", None)  # as on a machine without boto3
    with pytest.raises(UserError, match="pip install boto3"):
        open_store("s3://bucket")


def test_an_s3_store_without_boto3_exits_2_before_trial_0(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(study={"keep_top_k_adapters": 1, "artifact_store": "s3://bucket"}))
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert cli_exit_code(["run", str(path)], monkeypatch) == 2
    said = capsys.readouterr().err
    assert "study.artifact_store = 's3://bucket'" in said and "pip install boto3" in said
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert not study.trials  # no trial was trained

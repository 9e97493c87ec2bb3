"""Kept adapters as Optuna artifacts: uploaded by the trial that trained them, found by ``export`` anywhere.

``study.keep_top_k_adapters: k`` keeps the adapters of the k best trials. The trial that trains one
saves it (PEFT ``save_pretrained``), packs the directory as ``adapter.tar.gz`` and uploads it with
``optuna.artifacts.upload_artifact``; Optuna records the artifact (id, file name) in the trial's
system attrs, and the trial records where the store is (user attr ``adapter_store``). The store is a
directory (``FileSystemArtifactStore``; shared by every worker that sees the path) or an S3 bucket
(``s3://BUCKET``, ``Boto3ArtifactStore``, needs boto3).

A trial pushed out of the top-k has its artifact removed from the store by the trial that pushed
it out, which lists it in its own user attr ``dropped_adapters`` first: Optuna cannot change a
finished trial, so the artifact's record stays (optuna-dashboard still lists it) while the file goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from adalora_search.errors import UserError
from adalora_search.search import ranking
from adalora_search.search.optuna_internals import storage_of
from adalora_search.search.record import TrialRecord
from adalora_search.urls import artifact_location_problem

ADAPTER_FILE = "adapter.tar.gz"
STORE_ATTR = "adapter_store"  # trial user attr: the store its adapter was uploaded to
DROPPED_ATTR = "dropped_adapters"  # trial user attr: trials whose adapters it pushed out of the top-k
_log = logging.getLogger(__name__)


def default_location(study_file: str | Path, name: str) -> str:
    """``<study file dir>/<name>_artifacts`` (absolute), the store when ``study.artifact_store`` is unset."""
    return str(Path(study_file).resolve().parent / f"{name}_artifacts")


def open_store(location: str, field: str = "study.artifact_store", create: bool = False):
    """The Optuna artifact store at ``location``; ``create`` makes a missing directory.

    Raises ``UserError`` naming ``field`` when the location is malformed, the directory cannot be
    made, or an ``s3://`` store is asked for without boto3 installed.
    """
    problem = artifact_location_problem(location)
    if problem:
        raise UserError(f"{field} = {location!r}: {problem}")
    if location.startswith("s3://"):
        try:
            import boto3  # noqa: F401  (Optuna's Boto3ArtifactStore needs it)
        except ImportError:
            raise UserError(f"{field} = {location!r}: an S3 artifact store needs boto3; pip install boto3") from None
        return optuna.artifacts.Boto3ArtifactStore(location.removeprefix("s3://").rstrip("/"))
    if create:
        try:
            Path(location).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{field} = {location!r}: cannot create the directory ({exc.strerror}); choose a writable directory"
            ) from None
    return AtomicFileSystemArtifactStore(location)


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's directory store, writing each artifact under a temporary name and renaming it into place:
    a full disk leaves no partial artifact behind.
    """

    def __init__(self, base_path: str | Path) -> None:
        super().__init__(base_path)
        self._root = Path(base_path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Store ``content_body`` as ``artifact_id``, whole or not at all (raises the ``OSError``)."""
        if Path(artifact_id).name != artifact_id:
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        fd, tmp = tempfile.mkstemp(dir=self._root, prefix=f".{artifact_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(content_body, f)
            os.replace(tmp, self._root / artifact_id)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def adapter_meta(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> list:
    """The trial's ``adapter.tar.gz`` artifact records (``ArtifactMeta``), oldest first."""
    return [m for m in get_all_artifact_meta(trial, storage=storage_of(study)) if m.filename == ADAPTER_FILE]


def dropped_by(trials: list[FrozenTrial]) -> dict[int, int]:
    """Trial number -> number of the trial that pushed its adapter out of the top-k."""
    return {n: t.number for t in trials for n in TrialRecord.of(t).dropped_adapters}


def keep_adapter(trial: optuna.Trial, save: Callable[[str], None], value: float, k: int, location: str) -> None:
    """Upload this trial's adapter if it is among the ``k`` best; remove the adapters it pushes out.

    ``save(directory)`` writes the adapter (PEFT ``save_pretrained``); ``value`` is this trial's
    objective value; the k best are ``ranking.top_k``'s (ties to the earlier trial, as in Optuna).
    Raises whatever the store raised when the adapter cannot be written there (the trial's
    ``adapter_store`` then reads None); the caller keeps the trained result regardless.
    """
    study = trial.study
    trials = study.get_trials(deepcopy=False)
    keep = ranking.top_k(study, k, trial.number, [value])
    if trial.number in keep:
        _upload(trial, save, open_store(location, create=True), location)
    gone = dropped_by(trials)
    stores = {t.number: TrialRecord.of(t).adapter_store for t in trials if t.state.is_finished()}
    drop = [t for t in trials if stores.get(t.number) and t.number not in keep and t.number not in gone]
    if not drop:
        return
    trial.set_user_attr(DROPPED_ATTR, sorted(t.number for t in drop))  # recorded before the files go
    for old in drop:
        try:
            store = open_store(stores[old.number] or "", f"trial {old.number} {STORE_ATTR}")
            for meta in adapter_meta(study, old):
                with contextlib.suppress(ArtifactNotFound):
                    store.remove(meta.artifact_id)
        except Exception as exc:  # noqa: BLE001 - best effort (e.g. a store this machine cannot reach, S3 errors)
            _log.warning(
                "could not remove the adapter of trial %d, pushed out of the top-k (%s: %s); it stays in "
                "its store, and export says it was dropped",
                old.number,
                type(exc).__name__,
                exc,
            )


def _upload(trial: optuna.Trial, save: Callable[[str], None], store, location: str) -> None:
    trial.set_user_attr(STORE_ATTR, location)  # before the upload: a record without a file is then explained
    with tempfile.TemporaryDirectory(prefix="adalora-adapter-") as tmp:
        directory, archive = Path(tmp) / "adapter", Path(tmp) / ADAPTER_FILE
        try:
            save(str(directory))
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(directory, arcname=".")
            upload_artifact(artifact_store=store, file_path=str(archive), study_or_trial=trial)
        except BaseException:
            trial.set_user_attr(STORE_ATTR, None)  # no adapter went to the store
            raise


def restore_adapter(study: optuna.Study, trial: FrozenTrial, dest: Path) -> bool:
    """Download and unpack the trial's kept adapter into ``dest``; False when the study kept none for it.

    A trial pushed out of the top-k, or a local directory of an older study that is not here, is
    said with a warning. Raises ``UserError`` (exit 2) naming the store it looked in when the trial
    has an adapter artifact that the store does not hold.
    """
    if (failure := TrialRecord.of(trial).adapter_failure) is not None:  # whether or not Optuna recorded its meta
        _log.warning(
            "trial %d's adapter could not be kept when it trained (%s); adapter/ is not exported", trial.number, failure
        )
        return False
    metas = adapter_meta(study, trial)
    if not metas:
        return _legacy_copy(trial, dest)
    pusher = dropped_by(study.get_trials(deepcopy=False)).get(trial.number)
    if pusher is not None:
        _log.warning(
            "trial %d's adapter was removed from the artifact store when trial %d pushed it out of the "
            "study's top keep_top_k_adapters; adapter/ is not exported",
            trial.number,
            pusher,
        )
        return False
    location = TrialRecord.of(trial).adapter_store
    meta = metas[-1]
    looked = f"artifact {meta.artifact_id} ({ADAPTER_FILE}) in the artifact store {location!r}"
    if not location:
        raise UserError(
            f"trial {trial.number}: has an adapter artifact {meta.artifact_id} but no {STORE_ATTR} "
            "user attr saying where it was stored; export another trial with --trial"
        )
    store = open_store(location, f"trial {trial.number} {STORE_ATTR}")
    with tempfile.TemporaryDirectory(prefix="adalora-adapter-") as tmp:
        archive = Path(tmp) / ADAPTER_FILE
        try:
            download_artifact(artifact_store=store, file_path=str(archive), artifact_id=meta.artifact_id)
        except (ArtifactNotFound, OSError) as exc:
            raise UserError(
                f"trial {trial.number}: its kept adapter is not found: looked for {looked} "
                f"({type(exc).__name__}); make that store reachable from this machine (mount or copy "
                "the directory to that path, or give boto3 credentials for the bucket) and export "
                "again"
            ) from None
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return True


def _legacy_copy(trial: FrozenTrial, dest: Path) -> bool:
    """A study from before artifact stores recorded a local adapter directory (``adapter_dir``)."""
    kept = TrialRecord.of(trial).adapter_dir
    if not kept:
        return False
    if Path(kept).is_dir():
        shutil.copytree(kept, dest)
        return True
    _log.warning(
        "trial %d recorded its adapter in the local directory %s, which is not here (pushed out of the "
        "top-k, or kept on another machine); adapter/ is not exported",
        trial.number,
        kept,
    )
    return False

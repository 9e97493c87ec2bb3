"""The Python API: each verb of the command line as a function that returns a typed result.

A study is a study file's path, or a ``StudySpec`` (``load_study_spec`` reads one from a file or
builds one from a dict, with the same checks); a stored study is found from either, or from
``storage`` and ``study_name``. Errors are ``UserError`` (``adalora_search.errors``) with the
messages the command line prints before it exits with code 2. Library warnings the verbs expect
are silenced while they run (``app.quiet``), never for the importing program.

    import adalora_search as als

    spec = als.load_study_spec("studies/smoke.yaml")
    assert als.validate(spec).ok
    result = als.run(spec, n_trials=2)
    result.best.rank_allocation, result.allocation   # module -> rank; layer x module DataFrame
    als.export(spec, out="smoke_export").manifest.rank_allocation
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from adalora_search.app import session
from adalora_search.app.quiet import quiet_warnings
from adalora_search.errors import Problem, UserError
from adalora_search.results.manifest import ExportManifest, read_manifest
from adalora_search.search.record import ReferenceResult, StudyRecord, TrialRecord
from adalora_search.study.loader import load_spec, parse_spec
from adalora_search.study.paths import resolve_paths
from adalora_search.study.spec import StudySpec

if TYPE_CHECKING:  # pandas, Optuna and the training stack are imported by the calls that need them
    import optuna
    import pandas as pd

    from adalora_search.results.retrain import RetrainResult

Study = session.Study


def load_study_spec(source: str | os.PathLike[str] | Mapping[str, Any]) -> StudySpec:
    """A checked study spec from a study file, or from a dict shaped like one (relative paths in a dict are
    relative to the working directory; its defaults, e.g. storage ``<study.name>.db``, are put there).

    Raises:
        UserError: every problem found, each naming its field (and, for a file, its line).
    """
    if isinstance(source, Mapping):
        try:
            spec = parse_spec(yaml.safe_dump(_plain(source), sort_keys=False), "<dict>")
        except yaml.YAMLError as exc:
            raise UserError(
                f"<dict>: not a study: {str(exc).splitlines()[0]}; use plain values (str, numbers, lists, dicts)"
            ) from None
        except UserError as exc:  # no line numbers: they would point into a text the user never saw
            raise UserError(exc.message, [replace(p, line=None) for p in exc.problems], exc.source) from None
        return resolve_paths(spec, Path.cwd())
    return load_spec(source)


def _plain(value: Any) -> Any:
    """``value`` with paths as strings and tuples as lists, as a study file would write them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@dataclass(frozen=True)
class Validation:
    """What ``validate`` found: ``error`` (None when the study can run) and the summary of its search space."""

    error: UserError | None
    summary: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def problems(self) -> list[Problem]:
        """Each problem with its field, value and message (an error that names no field: its message)."""
        if self.error is None:
            return []
        return self.error.problems or [Problem("", None, self.error.message)]


def validate(study: Study, check_data: bool = True, storage: str | None = None) -> Validation:
    """Check a study completely: the spec, its storage, and (``check_data``) its data and model, loaded once."""
    from adalora_search.app import describe
    from adalora_search.search import storage as storage_mod
    from adalora_search.search import warm_start
    from adalora_search.tasks import get_task

    try:
        with quiet_warnings():
            spec, study_file = session.resolve(study)
            storage_mod.check_reachable_here(session.storage_url(spec, study_file, storage))
            data, linears = session.check_inputs(spec, study_file) if check_data else (None, None)
            url = session.storage_url(spec, study_file, storage)
            fresh = spec.study.warm_start is not None and not session.warm_start_enqueued(url, spec.study.name)
            warm = warm_start.plan(spec) if fresh else []
    except UserError as exc:
        return Validation(exc)
    summary = describe.summary(spec, linears, data)
    if data is not None:
        checked = ("every length fits the model's positions", *get_task(spec.model.task).invariants)
        summary.append(f"  invariants checked on the data and model: {'; '.join(checked)}")
    if warm:
        summary.append(f"warm start: {len(warm)} configuration(s) run first: {', '.join(o for _, o in warm)}")
    if spec.model.trust_remote_code:
        summary.append("WARNING: model.trust_remote_code is true: code from the model repository will run")
    return Validation(None, summary)


@dataclass(frozen=True)
class StudyResult:
    """A stored study as ``run`` left it or ``status`` finds it.

    ``best``: the best trial (``search/ranking.py``; None before one completes); ``trials``: every
    trial; ``references``: kind -> the reference run kept; ``warnings``: what the results cannot be
    trusted for; ``lines``: what the command line prints; ``study``: the Optuna study itself.
    """

    study_name: str
    best: TrialRecord | None
    trials: list[TrialRecord]
    references: dict[str, ReferenceResult]
    warnings: list[str]
    lines: list[str]
    study: optuna.Study = field(repr=False)

    @classmethod
    def of(cls, study: optuna.Study, lines: list[str]) -> StudyResult:
        from adalora_search.search import diagnostics, ranking

        best = ranking.best(study)
        return cls(
            study.study_name,
            TrialRecord.of(best) if best is not None else None,
            [TrialRecord.of(t) for t in study.get_trials(deepcopy=False)],
            StudyRecord.of(study).references,
            diagnostics.study_notes(study),
            lines,
            study,
        )

    @property
    def allocation(self) -> pd.DataFrame:
        """The best trial's final ranks, layer x module (the report's heatmap); empty before a trial completes."""
        import pandas as pd

        from adalora_search.results import tables

        if self.best is None:
            return pd.DataFrame()
        return tables.pivot(tables.allocations_table(self.study), [self.best.number])

    @property
    def table(self) -> pd.DataFrame:
        """One row per trial: state, knobs, metrics, budget, steps, time (the report's ``trials.csv``)."""
        from adalora_search.results import tables

        return tables.trials_table(self.study)


def run(
    study: Study,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    workers: int = 1,
    gpus: Sequence[str] = (),
    workers_per_gpu: int = 1,
    allow_changed: bool = False,
    gpus_per_trial: int = 1,
) -> StudyResult:
    """Run (or resume) the search, then the reference runs; as ``adalora-search run``.

    ``n_trials`` / ``timeout`` override the study's budget; ``storage`` its storage URL. ``workers`` > 1
    or ``gpus`` start worker processes, which read the study file (a spec built in Python runs in this
    process only); ``gpus_per_trial`` > 1 trains each trial on that many processes (data parallel, one
    GPU each, or the CPU without one).
    """
    with quiet_warnings():
        stored, lines = session.run_session(
            study, n_trials, timeout, storage, workers, list(gpus), allow_changed, workers_per_gpu, gpus_per_trial
        )
        return StudyResult.of(stored, lines)


def status(study: Study | None = None, storage: str | None = None, study_name: str | None = None) -> StudyResult:
    """A stored study's trials, best trial and references, from storage alone; as ``adalora-search status``."""
    from adalora_search.search.status import status_lines

    with quiet_warnings():
        stored = session.locate(study, storage, study_name)
        return StudyResult.of(stored, status_lines(stored))


@dataclass(frozen=True)
class Report:
    """The report written by ``report``: its folder, its HTML page, and every file in the folder."""

    directory: Path
    page: Path
    files: list[Path]


def report(
    study: Study | None = None,
    out: str | os.PathLike[str] | None = None,
    top_k: int = 5,
    storage: str | None = None,
    study_name: str | None = None,
) -> Report:
    """Tables (CSV, Markdown), plots (PNG) and one HTML page; as ``adalora-search report``.

    ``out`` defaults to ``<study name>_report`` beside the study file (the working directory with only
    ``storage``).
    """
    with quiet_warnings():
        resolved = session.resolve(study) if study else None  # the study file read once, for both uses
        stored = session.locate(resolved[0] if resolved else None, storage, study_name)
        from adalora_search.results.report import write_report

        beside = Path(resolved[1]).resolve().parent if resolved else Path()
        directory = Path(out) if out else beside / f"{stored.study_name}_report"
        page = write_report(stored, directory, top_k)
    return Report(directory, page, sorted(directory.iterdir()))


@dataclass(frozen=True)
class Export:
    """An export written by ``export``: its folder, its manifest (``rank_config.json``), whether it holds the
    trained adapter (``adapter/``), and what the command line prints of it.
    """

    directory: Path
    manifest: ExportManifest
    has_adapter: bool
    lines: list[str]


def export(
    study: Study | None = None,
    *,
    out: str | os.PathLike[str],
    trial: int | None = None,
    force: bool = False,
    pick: str = "metric",
    storage: str | None = None,
    study_name: str | None = None,
) -> Export:
    """A trial's rank configuration as PEFT configs (and its kept adapter); as ``adalora-search export``.

    ``trial``: its number (default: the best trial; ``pick`` "params" on a Pareto front: the fewest
    trainable parameters); ``force`` replaces an earlier export at ``out``.
    """
    from adalora_search.results.exported import describe_export

    with quiet_warnings():
        stored = session.locate(study, storage, study_name)
        from adalora_search.results.export import export_trial

        directory = export_trial(stored, Path(out), trial, force, pick)
    return Export(
        directory, read_manifest(directory, "out"), (directory / "adapter").is_dir(), describe_export(directory)
    )


def retrain(export_dir: str | os.PathLike[str], learning_rates: Sequence[float] | None = None) -> RetrainResult:
    """Train an export's fixed-rank LoRA and compare it with the AdaLoRA trial; as ``adalora-search retrain``.

    ``learning_rates``: those to choose from on validation (default: the study's recommendation, see
    ``results/retrain.py``).
    """
    from adalora_search.results.retrain import retrain as train_export

    with quiet_warnings():
        return train_export(Path(export_dir), list(learning_rates) if learning_rates else None)

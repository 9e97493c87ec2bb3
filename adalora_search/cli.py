"""The ``adalora-search`` command line: validate, schema, run, worker, status, report, export, retrain.

A thin layer over the Python API (``adalora_search.api``): parse the arguments, call, print. Every user
error ends with a message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from adalora_search.errors import Interrupted, UserError


class _Command(click.Command):
    """A command whose line in ``--help``'s list is its whole first sentence, never cut with "..."."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or (self.help or "").strip().split("\n\n")[0].replace("\n", " ")


class _Group(click.Group):
    command_class = _Command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adalora-search")
@click.option("-q", "--quiet", is_flag=True, help="warnings and errors only")
@click.option("-v", "--verbose", is_flag=True, help="debug messages, and transformers' warnings")
def cli(quiet: bool, verbose: bool) -> None:
    """Declarative AutoML for AdaLoRA fine-tuning."""
    _configure_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    _quiet_libraries(verbose)


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is when a record is written (tests replace it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_HANDLER = _StderrHandler()  # the package's messages on stderr, at the level -q / -v choose


def _configure_logging(level: int) -> None:
    """Route the ``adalora_search`` loggers to stderr at ``level`` (once per process, even if re-invoked).

    Done here, not at import: a program that imports adalora_search keeps its own logging.
    """
    import optuna

    optuna.logging.disable_default_handler()  # Optuna's own lines ("A new study created") in our format
    _HANDLER.setFormatter(logging.Formatter("%(message)s"))
    optuna_level = level if level == logging.DEBUG else max(level, logging.WARNING)  # its info repeats ours: -v
    for name, at in (("adalora_search", level), ("optuna", optuna_level)):
        logger = logging.getLogger(name)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.setLevel(at)
        logger.propagate = False  # printed once, by this handler, whatever a library does to the root logger


def _quiet_libraries(verbose: bool) -> None:
    """The command line shows our progress, not transformers' load reports (about the new head) or bars.

    Through the variables transformers and huggingface_hub read when they are first imported, so a command
    that never trains (status, report) does not import them; set in place if they already are.
    """
    level = "warning" if verbose else "error"
    os.environ["TRANSFORMERS_VERBOSITY"] = level
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(getattr(hf_logging, level.upper()))
        hf_logging.disable_progress_bar()


@cli.command()
@click.argument("study_files", nargs=-1, required=True)
@click.option("--no-data", is_flag=True, help="skip loading the data and inspecting the model")
def validate(study_files: tuple[str, ...], no_data: bool) -> None:
    """Check study files completely and summarise their search space."""
    from adalora_search import api

    errors = []
    for path in study_files:
        checked = api.validate(path, check_data=not no_data)
        if checked.error is not None:
            errors.append(checked.error)
            continue
        click.echo(f"{path}: OK")
        for line in checked.summary:
            click.echo("  " + line)
    if errors:
        raise UserError("\n".join(str(e) for e in errors))


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the study file (for yaml-language-server)."""
    from adalora_search.study.spec import study_schema

    click.echo(json.dumps(study_schema(), indent=2))


def _budget_options(f):
    f = click.option("--n-trials", type=click.IntRange(min=1), help="finished trials for the whole study")(f)
    f = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="seconds")(f)
    f = click.option(
        "--allow-changed-study",
        "allow_changed",
        is_flag=True,
        help="go on with a stored study created from a different study file (not comparable)",
    )(f)
    f = click.option(
        "--gpus-per-trial",
        type=click.IntRange(min=1),
        default=1,
        help="processes (one per GPU; on the CPU without one) each trial trains on, data parallel",
    )(f)
    f = click.option("--fsdp", is_flag=True, help="not offered: says why (README, Beyond one GPU)")(f)
    return click.option(
        "--storage",
        envvar=STORAGE_ENV,
        show_envvar=True,
        help="SQLAlchemy URL; overrides study.storage (the variable keeps a password out of the process list)",
    )(f)


STORAGE_ENV = "ADALORA_SEARCH_STORAGE"


FSDP_REFUSED = (
    "--fsdp: not offered. AdaLoRA's rank pruning ranks every singular triplet of every adapted matrix against one "
    "global threshold, from importance scores of whole P, Lambda and Q tensors and their gradients; FSDP shards "
    "those tensors over the ranks, so PEFT's update_and_allocate would score a shard on each and prune differently "
    "per rank, and no test here proves otherwise. Use --gpus-per-trial N (data parallel: the same allocation on "
    "every rank, checked) or model.device_map: auto (one model across the GPUs)"
)


@cli.command()
@click.argument("study_file")
@_budget_options
@click.option("--workers", type=click.IntRange(min=1), default=1, help="worker processes on this machine")
@click.option("--gpus", default="", help="comma-separated GPU ids, one worker per GPU")
@click.option(
    "--workers-per-gpu",
    type=click.IntRange(min=1),
    default=1,
    help="workers sharing each GPU (--gpus, default every visible one; the CPU without one)",
)
def run(
    study_file: str,
    n_trials,
    timeout,
    storage,
    allow_changed: bool,
    fsdp: bool,
    gpus_per_trial: int,
    workers: int,
    gpus: str,
    workers_per_gpu: int,
) -> None:
    """Run (or resume) the search of STUDY_FILE."""
    from adalora_search import api

    if fsdp:
        raise UserError(FSDP_REFUSED)
    gpu_ids = [g.strip() for g in gpus.split(",") if g.strip()]
    result = api.run(
        study_file, n_trials, timeout, storage, workers, gpu_ids, workers_per_gpu, allow_changed, gpus_per_trial
    )
    for line in result.lines:
        click.echo(line)  # the result, on stdout; progress went to stderr through logging


@cli.command()
@click.argument("study_file")
@_budget_options
def worker(study_file: str, n_trials, timeout, storage, allow_changed: bool, fsdp: bool, gpus_per_trial: int) -> None:
    """One worker process (started by `run --workers`, or by hand on another machine)."""
    from adalora_search.app.quiet import quiet_warnings
    from adalora_search.app.session import run_worker

    if fsdp:
        raise UserError(FSDP_REFUSED)
    with quiet_warnings():
        run_worker(study_file, n_trials, timeout, storage, allow_changed, gpus_per_trial)


def _study_options(f):
    f = click.option("--storage", envvar=STORAGE_ENV, show_envvar=True, help="SQLAlchemy URL (instead of STUDY_FILE)")(
        f
    )
    f = click.option("--study", "study_name", help="study name (with --storage)")(f)
    return click.argument("study_file", required=False)(f)


@cli.command()
@_study_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable: counts, best trial, one row per trial")
def status(study_file, storage, study_name, as_json: bool) -> None:
    """Trial counts, best trial and running trials of a study."""
    from adalora_search import api

    result = api.status(study_file, storage, study_name)
    if as_json:
        from adalora_search.search.status import status_data

        click.echo(json.dumps(status_data(result.study), indent=2, allow_nan=False))
        return
    for line in result.lines:
        click.echo(line)


@cli.command()
@_study_options
@click.option(
    "--out",
    type=click.Path(),
    help="output directory (default: <study name>_report beside the study "
    "file, or in the working directory with --storage)",
)
@click.option("--top-k", type=click.IntRange(min=1), default=5, help="trials averaged in the top-k heatmap")
def report(study_file, storage, study_name, out, top_k: int) -> None:
    """Tables (CSV, Markdown), plots (PNG) and one HTML page of a study."""
    from adalora_search import api

    click.echo(f"report written: {api.report(study_file, out, top_k, storage, study_name).page}")


@cli.command()
@_study_options
@click.option("--out", type=click.Path(), help="export directory (required, unless --relocate)")
@click.option("--trial", "trial_number", type=int, help="trial number (default: the best trial)")
@click.option("--force", is_flag=True, help="replace an existing export")
@click.option(
    "--pick",
    type=click.Choice(["metric", "params"]),
    default="metric",
    help="Pareto studies: the front's best metric, or its fewest trainable parameters",
)
@click.option(
    "--relocate",
    type=click.Path(file_okay=False),
    metavar="EXPORT_DIR",
    help="after moving or copying an export: point its configs at its own base/ (nothing else is done)",
)
def export(study_file, storage, study_name, out, trial_number, force: bool, pick: str, relocate) -> None:
    """Export a trial's rank configuration as PEFT LoRA and AdaLoRA configs, and its kept adapter."""
    if relocate:
        from adalora_search.results.exported import relocate as relocate_export

        if study_file or storage or out:
            raise UserError(
                "--relocate EXPORT_DIR repoints a moved export and takes no study, --storage or --out; run it alone"
            )
        for line in relocate_export(Path(relocate)):
            click.echo(line)
        return
    if not out:
        raise UserError("--out: name the export directory (or --relocate EXPORT_DIR to repoint a moved export)")
    from adalora_search import api

    for line in api.export(
        study_file, out=out, trial=trial_number, force=force, pick=pick, storage=storage, study_name=study_name
    ).lines:
        click.echo(line)


@cli.command()
@click.argument("export_dir")
@click.option(
    "--learning-rate",
    "learning_rates",
    type=click.FloatRange(min=0, min_open=True),
    multiple=True,
    help="LoRA learning rate; repeat to try several (the best on validation is kept). "
    "Default: the rate the study's LoRA reference chose, else the best of 3e-4, 1e-3, 3e-3 and 1e-2",
)
def retrain(export_dir: str, learning_rates: tuple[float, ...]) -> None:
    """Train the exported fixed-rank LoRA and compare it with the AdaLoRA trial."""
    from adalora_search import api

    for line in api.retrain(export_dir, learning_rates).lines:
        click.echo(line)


def main() -> None:
    """The console entry point: user errors -> message on stderr and exit code 2, Ctrl-C -> 130."""
    from adalora_search.app.quiet import quiet_warnings

    try:
        with quiet_warnings():
            cli.main(standalone_mode=False)
    except UserError as exc:
        text = str(exc)
        study_file = next((a for a in sys.argv[1:] if a.endswith((".yaml", ".yml"))), None)
        if study_file and study_file not in text:
            text = f"{study_file}: {text}"
        click.echo(f"error: {text}", err=True)
        sys.exit(2)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C into Abort; say what it left behind
        cause = exc.__cause__ or exc.__context__
        click.echo(_interrupted(cause) if isinstance(cause, KeyboardInterrupt) else "aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except KeyboardInterrupt as exc:
        click.echo(_interrupted(exc), err=True)
        sys.exit(130)


def _interrupted(exc: KeyboardInterrupt) -> str:
    if next((a for a in sys.argv[1:] if not a.startswith("-")), None) == "retrain":  # nothing stored to resume
        command = " ".join(["adalora-search", *sys.argv[1:]])
        return f"interrupted; nothing of this retrain was kept; run `{command}` again"
    return exc.message() if isinstance(exc, Interrupted) else Interrupted().message()

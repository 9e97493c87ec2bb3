"""The Python API: the README's example runs as written, results are typed, errors are exceptions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import study_dict

import adalora_search as als
from adalora_search.errors import UserError
from adalora_search.search.record import ReferenceResult, TrialRecord

REPO = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "studies").mkdir()
    shutil.copy(REPO / "studies" / "smoke.yaml", tmp_path / "studies" / "smoke.yaml")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), scope)  # noqa: S102 - the documented example
    result = scope["result"]
    assert isinstance(result.best, TrialRecord) and len(result.trials) == 2
    assert result.allocation.to_numpy().sum() == result.best.total_rank  # layer x module, every module once
    assert (tmp_path / "studies" / "smoke.db").is_file()  # beside the study file, as the command line puts it
    assert scope["page"].is_file() and (tmp_path / "exports" / "smoke" / "rank_config.json").is_file()


def test_import_changes_no_global_state() -> None:
    code = (
        "import warnings, logging, optuna, pandas, sqlalchemy, pydantic, yaml, torch, transformers, peft, "
        "datasets, matplotlib.pyplot; "  # their own filters first
        "before = list(warnings.filters); "
        "import adalora_search, adalora_search.api, adalora_search.search.runner, adalora_search.results.report; "
        "assert warnings.filters == before, 'warning filters changed'; "
        "assert not logging.getLogger('adalora_search').handlers; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_spec_from_a_dict_is_checked_like_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = als.load_study_spec(study_dict())
    assert spec.study_file is None
    checked = als.validate(spec, check_data=False)
    assert checked.ok and any("knobs:" in line for line in checked.summary)
    with pytest.raises(UserError, match="target_r must be < init_r") as info:
        als.load_study_spec(study_dict(adalora={"init_r": 2, "target_r": 4}))
    assert [(p.field, p.line) for p in info.value.problems] == [("adalora.target_r", None)]  # no line of a text
    with_path = study_dict(study={"storage": None, "artifact_store": tmp_path / "kept"})  # a Path value, as in code
    assert als.load_study_spec(with_path).study.artifact_store == str(tmp_path / "kept")
    bad = als.validate(str(tmp_path / "missing.yaml"))
    assert not bad.ok and "cannot read study file" in bad.problems[0].message
    with pytest.raises(UserError, match="save it as YAML"):  # workers read a file; this spec has none
        als.run(spec, n_trials=1, workers=2)
    with pytest.raises(UserError, match="no study storage"):
        als.status(spec)


def test_stored_references_keep_their_shape() -> None:
    """``ReferenceResult`` writes the study attr as it always was: readers tell a failed run by its keys."""
    trained = {
        "metrics": {"final": {"accuracy": 0.9}, "test": {"accuracy": 0.8}},
        "trainable_params": {"final": 10},
        "timing": {"train_s": 1.0},
        "learning_rate": 1e-3,
        "warnings": [],
        "tried": [{"learning_rate": 1e-3, "validation": 0.9, "failure": None}],
        "of_trial": 4,
    }
    failed = {
        "failure": "RuntimeError: diverged",
        "learning_rate": 1e-2,
        "tried": [{"learning_rate": 1e-2, "validation": None, "failure": "RuntimeError: diverged"}],
        "of_trial": 4,
    }
    assert ReferenceResult.of(trained).as_attr() == trained and ReferenceResult.of(failed).as_attr() == failed
    assert ReferenceResult.of(trained).trained and not ReferenceResult.of(failed).trained
    assert (
        ReferenceResult.of({**trained, "metrics": {"final": {"accuracy": 0.9}, "test": None}}).metric("test", "x")
        is None
    )  # an older study stored a missing test split as null


def _handlers() -> dict:
    import signal

    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def test_run_leaves_signal_handlers_as_it_found_them_in_any_thread_or_event_loop(tmp_path: Path) -> None:
    """Field case case47: run() replaced the program's SIGINT handler and made SIGTERM raise KeyboardInterrupt for
    good, and from a worker thread it failed with ValueError (handlers can only be set in the main thread)."""
    import asyncio
    import signal
    import threading

    def own(signum, frame):  # the program's own handler
        raise KeyboardInterrupt("app")

    previous = signal.signal(signal.SIGINT, own)
    try:
        before = _handlers()
        study = tmp_path / "s.yaml"
        study.write_text(__import__("yaml").safe_dump(study_dict(study={"name": "s", "n_trials": 1})))
        als.run(str(study))
        assert _handlers() == before

        async def in_a_loop():
            return als.run(str(study), n_trials=2)

        assert len(asyncio.run(in_a_loop()).trials) == 2 and _handlers() == before
        errors: list[BaseException] = []

        def worker():
            try:
                als.run(str(study), n_trials=3)
            except BaseException as exc:  # noqa: BLE001 - recorded for the assert
                errors.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert errors == [] and _handlers() == before
        assert len(als.status(str(study)).trials) == 3
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_program_with_its_own_logging_sees_each_progress_line_once(tmp_path: Path, capsys) -> None:
    """Field case case47 (logging): with a handler on the root logger, every progress line was printed twice."""
    import io
    import logging

    import yaml

    buffer = io.StringIO()
    root, handler = logging.getLogger(), logging.StreamHandler(buffer)
    root.addHandler(handler)
    package = logging.getLogger("adalora_search")
    level = package.level
    package.setLevel(logging.INFO)
    try:
        study = tmp_path / "s.yaml"
        study.write_text(yaml.safe_dump(study_dict(study={"name": "s", "n_trials": 1})))
        als.run(str(study))
    finally:
        root.removeHandler(handler)
        package.setLevel(level)
    line = "[study s] 1 complete"
    assert buffer.getvalue().count(line) == 1 and line not in capsys.readouterr().err


def test_verbs_leave_threads_and_offline_mode_as_they_found_them(tmp_path: Path, monkeypatch) -> None:
    """#32 item 5 / #36 item 4: a trial set torch's threads for good, and an unreachable Hub put the whole process
    in offline mode for good: a notebook user of the API inherited both."""
    import os
    import socket

    import huggingface_hub.constants as hub
    import torch
    import yaml

    from adalora_search.app.quiet import process_state_restored
    from adalora_search.train import assets

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        study = tmp_path / "s.yaml"
        study.write_text(yaml.safe_dump(study_dict(study={"name": "s", "n_trials": 1}, training={"num_threads": 1})))
        assert als.run(str(study)).best is not None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    assets.offline_unless_reachable.cache_clear()
    with process_state_restored():
        assert assets.offline_unless_reachable() is True and os.environ["HF_HUB_OFFLINE"] == "1" and hub.HF_HUB_OFFLINE
    assert "HF_HUB_OFFLINE" not in os.environ and hub.HF_HUB_OFFLINE is False
    assets.offline_unless_reachable.cache_clear()


def test_a_raw_dict_where_a_study_belongs_names_load_study_spec() -> None:
    """#32 item 5: a dict given to run() ended in 'TypeError: expected str, bytes or os.PathLike object'."""
    with pytest.raises(UserError, match=r"got a dict; turn a dict into a spec with adalora_search.load_study_spec"):
        als.run({"study": {"name": "x"}})
    assert "load_study_spec" in str(als.validate({"study": {"name": "x"}}).error)
    spec = als.load_study_spec(study_dict(study={"name": "x", "n_trials": 1}))
    assert als.validate(spec, check_data=False).ok

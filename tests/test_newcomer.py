"""Issue #26: what a newcomer sees. Exports that travel, plots that explain themselves, status that reads
like a dashboard, errors at the speed of the mistake, one log line per message.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import REPO, run_cli, study_dict, tagging_study, write_study

from adalora_search.results import plots


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-trial study (a searched learning rate and init_r) with an export, kept adapter and report."""
    root = tmp_path_factory.mktemp("newcomer")
    study = study_dict(
        study={"n_trials": 4, "sampler": {"type": "random", "seed": 1}},
        training={"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}},
        adalora={"init_r": {"low": 4, "high": 6}},
        baselines=[{"name": "low", "params": {"training.learning_rate": 1e-3, "adalora.init_r": 4}}],
    )
    path = write_study(root, study)
    with pytest.MonkeyPatch.context() as mp:
        assert run_cli(["run", str(path)], mp, _Capture())[0] == 0
    return path


class _Capture:
    def readouterr(self):  # noqa: ANN202 - the shape run_cli expects from capsys
        return type("Out", (), {"out": "", "err": ""})()


# ---------------------------------------------------------------- 1. exports that travel
def test_a_moved_export_loads_after_relocate_with_no_other_argument(
    finished: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    code, out = run_cli(["export", str(finished), "--out", str(tmp_path / "export")], monkeypatch, capsys)
    assert code == 0 and "adapter/: trial" in out and "configurations to train with (retrain)" in out, out
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "export", moved)
    shutil.rmtree(tmp_path / "export")  # the original is gone: its absolute path no longer loads
    with pytest.raises((OSError, ValueError)):  # the old base path is gone (HFValidationError is a ValueError)
        AutoPeftModelForSequenceClassification.from_pretrained(str(moved / "adapter"))
    code, out = run_cli(["export", "--relocate", str(moved)], monkeypatch, capsys)
    assert code == 0 and "base_model_name_or_path -> " + str((moved / "base").resolve()) in out, out
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(moved / "adapter"))
    assert model.config.num_labels == 5
    assert AutoTokenizer.from_pretrained(str(moved / "adapter"))("a headline")["input_ids"]  # the tokenizer beside
    for name in ("lora", "adalora"):
        card = (moved / name / "README.md").read_text()
        assert card.startswith("---\n") and f"---\n# `{name}/`: a configuration to train with" in card  # metadata first
    assert "retrain" in (moved / "lora" / "README.md").read_text().split("## ")[0]
    assert "update_and_allocate" in (moved / "adalora" / "README.md").read_text().split("## ")[0]


def test_an_export_without_a_kept_adapter_says_so(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 1, "keep_top_k_adapters": 0}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    code, out = run_cli(["export", str(path), "--out", str(tmp_path / "e")], monkeypatch, capsys)
    assert code == 0 and "no adapter/: the study kept no trained adapter for trial 0" in out
    assert not (tmp_path / "e" / "adapter").exists()


def test_the_best_adapter_is_kept_by_default(finished: Path) -> None:
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{finished.parent / 'study.db'}")
    kept = [t.number for t in study.trials if t.user_attrs.get("adapter_store")]
    assert kept and len(list((finished.parent / "t_artifacts").iterdir())) == 1


# ---------------------------------------------------------------- 2. plots that explain themselves
@pytest.fixture()
def figures(monkeypatch) -> dict:
    """Every figure the report draws, by file name, kept open for inspection (instead of being saved)."""
    drawn: dict = {}

    def keep(fig, path: Path) -> Path:
        fig.tight_layout()
        fig.savefig(path)  # the page embeds the file; the figure stays open
        drawn[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def test_every_plot_has_a_title_a_true_legend_and_one_style(finished: Path, figures: dict, tmp_path: Path) -> None:
    from adalora_search.results.report import write_report

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{finished.parent / 'study.db'}")
    write_report(study, tmp_path / "report")
    assert {
        "heatmap_best.png",
        "heatmap_topk.png",
        "budget_curves.png",
        "pareto.png",
        "history.png",
        "intermediate.png",
    } <= set(figures)
    for name, fig in figures.items():
        ax = fig.axes[0]
        assert ax.get_title(), f"{name} has no title"
        assert ax.get_facecolor()[:3] == pytest.approx((0.898, 0.898, 0.898), abs=0.01), f"{name}: another style"
        legend = ax.get_legend()
        if legend is not None:  # every entry of a legend is drawn
            drawn = {a.get_label() for a in ax.get_children()}
            assert {t.get_text() for t in legend.get_texts()} <= drawn, name
    ticks = [t for t in figures["history.png"].axes[0].get_xticks() if t >= 0]
    assert ticks and all(float(t).is_integer() for t in ticks)  # trial numbers, not 0.5 steps
    assert figures["intermediate.png"].axes[0].get_legend() is not None
    assert all("accuracy" in t.get_text() for t in figures["budget_curves.png"].axes[0].get_legend().get_texts())
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Where the budget went: the best trial" in page and "By layer, " in page
    assert "This study names no reference run" in page and "(empty)" not in page.split("## references")[1][:80]


def test_importances_of_too_few_trials_are_left_out_and_said(tmp_path: Path, figures: dict) -> None:
    from adalora_search.results.report import write_report

    study = optuna.create_study()
    for i in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                value=0.5,
                params={"a": float(i), "b": float(i)},
                distributions={k: optuna.distributions.FloatDistribution(0, 3) for k in "ab"},
            )
        )
    assert plots.importances(study, tmp_path / "i.png") is None  # equal bars: no ranking to show
    write_report(study, tmp_path / "r")
    assert "importances.png" not in figures


# ---------------------------------------------------------------- 3. status as a dashboard
def test_status_reads_like_the_run_summary_and_json_fills_a_running_trial(tmp_path: Path, monkeypatch) -> None:
    from adalora_search.app.session import run_session
    from adalora_search.search import progress
    from adalora_search.search.status import status_data, status_lines

    path = write_study(tmp_path, study_dict(study={"n_trials": 2}, training={"max_steps": 12, "eval_every": 4}))
    seen: list = []
    step = progress.Progress.step

    def watch(self, number: int, at: int, total: int) -> None:
        seen.append((at, status_data(self.study), status_lines(self.study)))
        step(self, number, at, total)

    monkeypatch.setattr(progress.Progress, "step", watch)
    run_session(str(path), None, None, None, 1, [])
    at, data, lines = seen[1]  # trial 0, second evaluation: the first one is stored
    [running] = [t for t in data["trials"] if t["state"] == "RUNNING"]
    params = running["trainable_params"]
    assert running["steps"] == 4 and running["total_steps"] == 12 and params["initial"] > params["final"] > 0
    assert "running: trial 0 since " in "\n".join(lines) and ", step 4 of 12," in "\n".join(lines)
    assert "min left" in lines[0] and data["progress"].endswith("min left")  # an estimate before any trial ended
    lines = status_lines(optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}"))
    assert lines[1].split()[:2] == ["run", "val"] and lines[2].startswith("best trial ")  # the summary's table
    assert not any("values [" in line or "{'" in line for line in lines)  # no Python repr


def test_status_and_a_wrong_retrain_folder_do_not_import_the_training_stack(finished: Path, tmp_path: Path) -> None:
    probe = (
        "import sys; from adalora_search import cli; sys.argv = ['adalora-search', *sys.argv[1:]]\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    for args in (["status", str(finished)], ["retrain", str(tmp_path)]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert "heavy: []" in out.stdout, (args, out.stdout, out.stderr)


# ---------------------------------------------------------------- 4. errors at the speed of the mistake
def test_an_unreachable_hub_is_detected_once_and_quietly(monkeypatch, caplog) -> None:
    import huggingface_hub.constants as hub

    from adalora_search.train import assets

    def refuse(*args, **kwargs):  # noqa: ANN202 - socket.create_connection's stand-in
        raise OSError("Name or service not known")

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(assets.socket, "create_connection", refuse)
    monkeypatch.setattr(logging.getLogger("adalora_search"), "propagate", True)
    assets.offline_unless_reachable.cache_clear()
    try:
        with caplog.at_level(logging.INFO):
            assert assets.offline_unless_reachable() and assets.offline_unless_reachable()
        assert hub.HF_HUB_OFFLINE is True
        assert assets.offline_unless_reachable.cache_info().misses == 1  # tried once, then remembered
        assert "cannot be reached: Hub models and datasets are read from the local cache only" in caplog.text
    finally:
        assets.offline_unless_reachable.cache_clear()


def test_help_lists_every_command_whole(monkeypatch, capsys) -> None:
    from adalora_search import cli

    code, out = run_cli(["--help"], monkeypatch, capsys)
    assert code == 0 and "..." not in out.split("Commands:")[1]
    for name, command in cli.cli.commands.items():
        first = command.help.split("\n\n")[0].split()
        assert "".join(first) in "".join(out.split()), name  # whole, however the terminal wraps it


# ---------------------------------------------------------------- 5, 6. one line per message, said plainly
def test_a_progress_line_is_printed_once_even_with_a_root_handler(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    handler = logging.StreamHandler(sys.stderr)  # what logging.basicConfig in a library would add
    logging.getLogger().addHandler(handler)
    try:
        code, out = run_cli(["run", str(path)], monkeypatch, capsys)
    finally:
        logging.getLogger().removeHandler(handler)
    assert code == 0 and out.count("[study t] 1 complete") == 1 and "INFO:adalora_search" not in out
    assert "A new study created" not in out and "[I 20" not in out  # Optuna's info line repeats ours
    assert "t' in sqlite:///" in out and "new study" in out
    path = write_study(tmp_path, study_dict(study={"n_trials": 1, "name": "u"}), "u.yaml")
    code, out = run_cli(["-v", "run", str(path)], monkeypatch, capsys)
    assert code == 0 and "A new study created in RDB with name: u" in out and "[I 20" not in out  # our format


def test_the_first_line_of_a_run_says_queued_baselines(finished: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    study = study_dict(study={"n_trials": 1}, baselines=[{"name": "a", "params": {}}, {"name": "b", "params": {}}])
    path = write_study(tmp_path, study)
    from adalora_search.app.session import stored_line
    from adalora_search.search.runner import open_study
    from adalora_search.study.loader import load_spec

    assert (
        stored_line(open_study(load_spec(path), f"sqlite:///{tmp_path / 'study.db'}"))
        == "new study, 2 baselines queued (a, b)"
    )


def test_heatmaps_use_the_models_own_module_names() -> None:
    from adalora_search.results.tables import module_name

    assert module_name("model.layers.3.self_attn.q_proj") == "self_attn.q_proj"
    assert module_name("bert.encoder.layer.0.attention.self.query") == "attention.self.query"
    assert module_name("transformer.h.1.attn.c_attn") == "attn.c_attn"
    assert module_name("bert.pooler.dense") == "pooler.dense"


def test_row_numbers_in_data_errors_are_the_files_lines(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = [{"tokens": ["ann", "met", f"w{i}"], "ner": ["B-PER", "O", "O"]} for i in range(40)]
    rows[6] = {"tokens": ["ann", "met"], "ner": ["B-PER"]}  # the 7th record: line 7 of the file
    (tmp_path / "ner.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    study = tagging_study()
    code, out = run_cli(["validate", str(write_study(tmp_path, study))], monkeypatch, capsys)
    assert code == 2 and "ner.jsonl line 7 must hold a list of words" in out, out


def test_the_schema_names_where_tasks_live() -> None:
    from adalora_search.study.spec import ModelSpec

    assert "adalora_search/tasks" in ModelSpec.model_fields["task"].description
    assert (REPO / "adalora_search" / "tasks").is_dir()


def test_an_interrupted_retrain_does_not_say_resume(monkeypatch) -> None:
    from adalora_search import cli

    monkeypatch.setattr(sys, "argv", ["adalora-search", "-q", "retrain", "x"])
    assert "run `adalora-search -q retrain x` again" in cli._interrupted(KeyboardInterrupt())


def test_a_report_of_a_running_study_says_its_references_come_later(tmp_path: Path) -> None:
    from adalora_search.results.report import write_report
    from adalora_search.search.runner import Budget, work
    from adalora_search.study.loader import load_spec

    path = write_study(tmp_path, study_dict(study={"n_trials": 1, "references": [{"kind": "lora"}]}))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    work(load_spec(path), url, Budget(1, None), tmp_path / "store", log=lambda _: None)  # a worker: no references
    write_report(optuna.load_study(study_name="t", storage=url), tmp_path / "r")
    page = (tmp_path / "r" / "report.md").read_text()
    assert "Reference runs lora are not stored yet: `run` trains them once the study's last trial" in page


def test_a_best_trial_that_is_a_baseline_is_one_row_and_failures_are_listed(tmp_path: Path) -> None:
    from optuna.trial import TrialState, create_trial

    from adalora_search.search.status import status_lines

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("objectives", [{"metric": "accuracy", "direction": "maximize"}])
    metrics = {"final": {"accuracy": 0.9}}
    study.add_trial(create_trial(value=0.9, user_attrs={"baseline": "peft-defaults", "metrics": metrics}))
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            user_attrs={"failure": {"type": "Interrupted", "message": "stopped by SIGINT/SIGTERM"}},
        )
    )
    study.enqueue_trial({}, user_attrs={"retried_from": 1})
    lines = status_lines(study)
    assert sum(line.startswith(("best trial 0", "baseline peft-defaults")) for line in lines) == 2  # row + knobs
    assert any(line.startswith("best trial 0 = baseline peft-defaults ") for line in lines)
    assert "failed: trial 1 (Interrupted: stopped by SIGINT/SIGTERM)" in lines
    assert "queued: trial 2 (re-run of trial 1)" in lines

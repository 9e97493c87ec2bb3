"""Issue #21 items 2-5: label vocabularies, constant objectives, inputs identified by content, relative
storage URLs, whole-or-nothing writes (field cases case24, case26, case27, case30).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import types
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_cli, study_dict, tagging_study, write_study
from optuna.trial import TrialState, create_trial

from adalora_search import files
from adalora_search.search import diagnostics
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec
from adalora_search.tasks import EvalContext, get_task
from adalora_search.train.data import Split

FIELD = Path(__file__).parent / "field_cases"


# ---------------------------------------------------------------- item 2: labels that make the objective constant
def test_integer_tags_need_names_and_then_read_as_the_named_tags(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case24: integer NER tags with no names gave F1 0.0 for every trial, exit 0."""
    shutil.copytree(FIELD / "case24", tmp_path / "case24")
    monkeypatch.chdir(tmp_path / "case24")
    code, out = run_cli(["run", "study_ints.yaml"], monkeypatch, capsys)
    assert code == 2 and "stores tags as integer ids" in out and "data.label_names" in out, out
    assert not list(Path().glob("*.db"))
    study = yaml.safe_load(Path("study_ints.yaml").read_text())
    study["data"]["label_names"] = ["O", "B-PER", "I-PER", "B-LOC"]  # make_data.py's names, in id order
    Path("study_ints.yaml").write_text(yaml.safe_dump(study))
    named, strings = prepare_data(load_spec("study_ints.yaml")), prepare_data(load_spec("study_bio.yaml"))
    assert named.label_names == ["O", "B-PER", "I-PER", "B-LOC"]  # the names' order is the ids' order
    for split in ("train", "validation"):
        tags = [[named.label_names[i] for i in row if i != -100] for row in named.splits[split].columns["labels"]]
        assert tags == [
            [strings.label_names[i] for i in row if i != -100] for row in strings.splits[split].columns["labels"]
        ]
    assert run_cli(["run", "study_ints.yaml"], monkeypatch, capsys)[0] == 0


@pytest.mark.parametrize(
    "tags, expect",
    [
        (["PER", "O", "LOC"], "are not entity tags seqeval reads"),
        (["1", "0", "3"], "they look like ids: store them as integers"),
        (["per-B", "O", "O"], "are not entity tags seqeval reads"),
        (["O", "O", "O"], "every tag of the train split is O"),
    ],
)
def test_tags_that_would_score_f1_zero_are_refused(
    tags: list[str], expect: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    rows = [{"tokens": ["ann", "met", f"w{i}"], "ner": tags} for i in range(40)]
    (tmp_path / "ner.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    study = tagging_study()
    code, out = run_cli(["validate", str(write_study(tmp_path, study))], monkeypatch, capsys)
    assert code == 2 and expect in out and "Traceback" not in out, out


def test_bilou_tags_are_scored_as_entities() -> None:
    """BILOU's L-/U- are read as IOBES's E-/S-: a perfect prediction scores F1 1, not 0."""
    import torch

    names = ["O", "B-PER", "I-PER", "L-PER", "U-LOC"]
    labels = [[-100, 1, 2, 3, 0, 4, -100]]
    split = Split({"input_ids": [[0] * 7], "labels": labels})
    gold = torch.tensor(labels)

    def forward(batch: dict) -> torch.Tensor:
        return torch.nn.functional.one_hot(gold.clamp(min=0), len(names)).float() * 10

    ctx = EvalContext(
        forward=forward,
        batches=lambda: [{"input_ids": gold.clone(), "labels": gold.clone()}],
        split=split,
        label_names=names,
    )
    assert get_task("token_classification").evaluate(ctx)["f1"] == 1.0


def _study_with_histories(histories: list[list[dict]], url: str | None = None) -> optuna.Study:
    study = optuna.create_study(study_name="t", storage=url, direction="maximize")
    study.set_user_attr("objectives", [{"metric": "f1", "direction": "maximize"}])
    study.set_user_attr("task", "token_classification")
    for history in histories:
        study.add_trial(create_trial(value=history[-1]["f1"], user_attrs={"history": history}))
    return study


def test_an_objective_that_never_moves_is_said_in_status_and_report(tmp_path: Path, monkeypatch, capsys) -> None:
    flat = [[{"step": s, "f1": 0.0, "eval_loss": 1.0 / s, "budget": 8} for s in (4, 8)] for _ in range(3)]
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = _study_with_histories(flat, url)
    [note] = diagnostics.constant_objectives(study)
    assert "the objective f1 is 0 at every one of 6 evaluations" in note and "eval_loss moves" in note
    code, out = run_cli(["status", "--storage", url, "--study", "t"], monkeypatch, capsys)
    assert code == 0 and "WARNING: the objective f1 is 0" in out
    code, out = run_cli(["status", "--storage", url, "--study", "t", "--json"], monkeypatch, capsys)
    assert json.loads(out)["warnings"] == [note]
    code, _ = run_cli(["report", "--storage", url, "--study", "t", "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 0 and "WARNING: the objective f1 is 0" in (tmp_path / "r" / "report.md").read_text()
    moving = [[{"step": 4, "f1": 0.1, "eval_loss": 0.5}], [{"step": 4, "f1": 0.2, "eval_loss": 0.4}]]
    assert diagnostics.constant_objectives(_study_with_histories(moving)) == []
    still = [[{"step": 4, "f1": 0.0, "eval_loss": 0.5}], [{"step": 4, "f1": 0.0, "eval_loss": 0.5}]]
    assert diagnostics.constant_objectives(_study_with_histories(still)) == []  # nothing moved: no claim


# ---------------------------------------------------------------- item 3: inputs identified by content
def _reviews(path: Path, n: int = 60, third: int = 0) -> None:
    rows = [f"{'lovely' if i % 2 else 'rude'} stall number {i},{'pos' if i % 2 else 'neg'}" for i in range(n)]
    rows += [f"fine but slow kiosk {i},mixed" for i in range(third)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")


def _review_study(tmp_path: Path) -> Path:
    return write_study(
        tmp_path,
        study_dict(
            study={"n_trials": 1},
            data={
                "source": {"type": "files", "format": "csv", "paths": {"train": "reviews.csv"}},
                "text_fields": ["text"],
                "max_train_samples": None,
                "max_eval_samples": None,
            },
        ),
    )


def test_a_data_file_edited_in_place_is_read_again_even_with_its_size_and_mtime(tmp_path: Path) -> None:
    """Field case case26: the cache key was the study's settings, so an edited file was never read again."""
    _reviews(tmp_path / "reviews.csv")
    path = _review_study(tmp_path)
    before = prepare_data(load_spec(path))
    stat = (tmp_path / "reviews.csv").stat()
    text = (tmp_path / "reviews.csv").read_text()
    (tmp_path / "reviews.csv").write_text(text.replace(",pos", ",POS"))  # same size
    os.utime(tmp_path / "reviews.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    after = prepare_data(load_spec(path))
    assert before.label_names == ["neg", "pos"] and after.label_names == ["POS", "neg"]


def test_a_stored_study_refuses_changed_data_and_export_keeps_the_trial_labels(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    _reviews(tmp_path / "reviews.csv")
    path = _review_study(tmp_path)
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    _reviews(tmp_path / "reviews.csv", third=40)  # the same path: a third class
    code, out = run_cli(["run", str(path), "--n-trials", "2"], monkeypatch, capsys)
    assert code == 2 and "changed: data (data.content: stored" in out, out
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0 and "3 classes in train" in out
    assert run_cli(["export", str(path), "--out", str(tmp_path / "export")], monkeypatch, capsys)[0] == 0
    exported = json.loads((tmp_path / "export" / "rank_config.json").read_text())
    assert exported["label_names"] == ["neg", "pos"]  # what trial 0 trained, not today's file
    code, out = run_cli(["run", str(path), "--n-trials", "2", "--allow-changed-study"], monkeypatch, capsys)
    assert code == 0 and "WARNING (--allow-changed-study)" in out


def test_an_edited_study_whose_trials_all_failed_goes_on_with_the_edited_file(tmp_path: Path) -> None:
    from adalora_search.search.runner import open_study

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study(load_spec(write_study(tmp_path, study_dict())), url)
    study.add_trial(create_trial(state=TrialState.FAIL))
    said: list[str] = []
    edited = load_spec(write_study(tmp_path, study_dict(adalora={"init_r": 6})))
    open_study(edited, url, log=said.append)  # nothing to mix: no refusal
    assert len(said) == 1 and "only failed trials" in said[0]
    open_study(edited, url, log=said.append)  # the fingerprint now follows the edited file
    assert len(said) == 1


# ---------------------------------------------------------------- item 4: relative storage URLs
def test_a_relative_sqlite_storage_is_beside_the_study_file(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case27: `sqlite:///trials.db` opened another database from another working directory."""
    (tmp_path / "case").mkdir()
    path = write_study(tmp_path / "case", study_dict(study={"n_trials": 1, "storage": "sqlite:///trials.db"}))
    monkeypatch.chdir(tmp_path / "case")
    assert run_cli(["run", "study.yaml"], monkeypatch, capsys)[0] == 0
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["status", "case/study.yaml"], monkeypatch, capsys)
    assert code == 0 and "study t: 1 complete" in out
    code, out = run_cli(["run", "case/study.yaml"], monkeypatch, capsys)
    assert code == 0 and "1 trial stored" in out and "[trial 1]" not in out  # nothing trained again
    assert not (tmp_path / "trials.db").exists() and (tmp_path / "case" / "trials.db").exists()
    assert load_spec(path).study.storage == f"sqlite:///{tmp_path / 'case' / 'trials.db'}"


# ---------------------------------------------------------------- item 5: writes are whole, errors are exit 2
def _full_disk(monkeypatch: pytest.MonkeyPatch, after: int = 100) -> None:
    """Writes through ``files`` fail with ENOSPC after ``after`` bytes, as on a full disk."""

    class Full:
        def __init__(self, fd: int, mode: str):
            self.f = os.fdopen(fd, mode)

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> None:
            self.f.write(data[:after])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "os", types.SimpleNamespace(**{**vars(os), "fdopen": Full}))


def test_report_on_a_full_disk_or_under_a_file_exits_2_and_leaves_nothing_partial(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Field case case30 (b, c): tracebacks, and a 0-byte trials.csv left behind."""
    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    out_dir = tmp_path / "report"
    assert run_cli(["report", str(path), "--out", str(out_dir)], monkeypatch, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    (tmp_path / "reviews.csv").write_text("a file, not a folder")
    code, out = run_cli(["report", str(path), "--out", str(tmp_path / "reviews.csv" / "x")], monkeypatch, capsys)
    assert code == 2 and "a part of the path is a file, not a folder" in out and "Traceback" not in out, out
    with monkeypatch.context() as m:
        _full_disk(m)
        code, out = run_cli(["report", str(path), "--out", str(out_dir)], monkeypatch, capsys)
        assert code == 2 and "trials.csv" in out and "no space left on the device" in out, out
        code, out = run_cli(["report", str(path), "--out", str(tmp_path / "new")], monkeypatch, capsys)
        assert code == 2 and not (tmp_path / "new").exists()  # not even the folder it made
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before  # the old report, whole


def test_export_that_cannot_be_written_exits_2_and_leaves_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case30 (a): a traceback when the disk filled during export."""
    from adalora_search.results import export

    path = write_study(tmp_path, study_dict(study={"n_trials": 1}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    write = export._write

    def fill_up(study, trial, tmp: Path, final: Path) -> None:
        write(study, trial, tmp, final)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "base" / "model.safetensors"))

    monkeypatch.setattr(export, "_write", fill_up)
    before = sorted(tmp_path.iterdir())
    code, out = run_cli(["export", str(path), "--out", str(tmp_path / "export")], monkeypatch, capsys)
    assert code == 2 and "--out" in out and "no space left on the device" in out and "Traceback" not in out, out
    assert sorted(tmp_path.iterdir()) == before  # no export, no temporary folder


def test_export_files_have_the_modes_of_new_files(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 1, "keep_top_k_adapters": 1}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    assert run_cli(["export", str(path), "--out", str(tmp_path / "export")], monkeypatch, capsys)[0] == 0
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "export").rglob("*") if p.is_file()}
    assert modes == {0o666 & ~mask} and (tmp_path / "export").stat().st_mode & 0o777 == 0o777 & ~mask


def test_an_artifact_store_that_fills_up_keeps_the_trained_trial(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case30 (d): a full artifact store turned the trained trial into FAIL and left a 0-byte file."""
    from adalora_search.search import artifacts

    def half_then_full(source, target) -> None:
        target.write(source.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.shutil, "copyfileobj", half_then_full)
    path = write_study(tmp_path, study_dict(study={"n_trials": 2, "keep_top_k_adapters": 1}))
    code, out = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 0, out
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # trained results are never thrown away
    failed = [t for t in study.trials if "adapter_failure" in t.user_attrs]
    assert failed and all("no space left on the device" in t.user_attrs["adapter_failure"] for t in failed)
    assert all(t.user_attrs.get("adapter_store") is None for t in study.trials)
    assert all(t.user_attrs["metrics"]["final"] and t.user_attrs["rank_allocation"] for t in study.trials)
    assert list((tmp_path / "t_artifacts").iterdir()) == []  # no partial artifact
    code, out = run_cli(["status", str(path)], monkeypatch, capsys)
    assert code == 0 and "WARNING: its adapter could not be kept in the artifact store" in out, out
    code, out = run_cli(["export", str(path), "--out", str(tmp_path / "e")], monkeypatch, capsys)
    assert code == 0 and "adapter could not be kept when it trained" in out and "no adapter/" in out, out


# ---------------------------------------------------------------- item 8: results that learned nothing are said
def test_a_single_class_result_is_flagged_in_summary_report_export_and_card(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A LoRA reference that learned nothing was not flagged; export of such a trial said nothing."""
    path = write_study(
        tmp_path,
        study_dict(
            study={"n_trials": 1, "references": [{"kind": "lora", "learning_rate": 1e-9}]},
            training={"learning_rate": 1e-9},
        ),
    )
    code, out = run_cli(["run", str(path)], monkeypatch, capsys)
    lines = out.splitlines()
    ref = next(i for i, line in enumerate(lines) if line.startswith("reference lora"))
    assert code == 0 and lines[ref + 1].startswith("  WARNING: predicts a single class"), out
    assert run_cli(["report", str(path), "--out", str(tmp_path / "r")], monkeypatch, capsys)[0] == 0
    page = (tmp_path / "r" / "report.md").read_text()
    assert "WARNING (best trial 0): predicts a single class" in page and "WARNING (reference lora)" in page
    code, out = run_cli(["export", str(path), "--out", str(tmp_path / "e")], monkeypatch, capsys)
    assert code == 0 and "trial 0: WARNING: predicts a single class" in out
    assert "**Warning:** predicts a single class" in (tmp_path / "e" / "README.md").read_text()


def test_rows_with_empty_text_are_left_out_and_counted(tmp_path: Path, monkeypatch, capsys) -> None:
    """Issue #21 item 7: empty text cells were trained on as empty inputs, and validate did not count them."""
    rows = [f"{'' if i % 10 == 3 else f'stall {i} was good'},{'pos' if i % 2 else 'neg'}" for i in range(60)]
    (tmp_path / "reviews.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    path = _review_study(tmp_path)
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    data = prepare_data(load_spec(path))
    left_out = {split: counts.get("empty text", 0) for split, counts in data.dropped.items()}
    assert sum(left_out.values()) == 1  # six empty cells: five removed first as repeats of the first one
    assert code == 0 and "rows left out (empty text): " in out and "rows that repeat an earlier row" in out
    assert all(len(ids) > 2 for split in data.splits.values() for ids in split.columns["input_ids"])


@pytest.mark.parametrize("target", [".", "reviews.csv", "precious"])
def test_export_force_replaces_only_an_earlier_export(target: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """`--out . --force` was a traceback; `--force` replaced the study's data file or any folder."""
    path = write_study(tmp_path, study_dict(study={"n_trials": 1, "keep_top_k_adapters": 0}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    (tmp_path / "reviews.csv").write_text("text,label\n")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "important.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out = run_cli(["export", "study.yaml", "--out", target, "--force"], monkeypatch, capsys)
    assert (
        code == 2
        and "Traceback" not in out
        and ("holds the working directory" in out or "is a file" in out or "not an export" in out)
    ), out
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert run_cli(["export", "study.yaml", "--out", "e"], monkeypatch, capsys)[0] == 0
    assert run_cli(["export", "study.yaml", "--out", "e", "--force"], monkeypatch, capsys)[0] == 0  # an export


def test_out_under_a_file_says_a_file_is_in_the_way(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_study(tmp_path, study_dict(study={"n_trials": 1, "keep_top_k_adapters": 0}))
    assert run_cli(["run", str(path)], monkeypatch, capsys)[0] == 0
    (tmp_path / "reviews.csv").write_text("a file")
    for command in ("export", "report"):
        code, out = run_cli(
            [command, str(path), "--out", str(tmp_path / "reviews.csv" / "sub" / "x")], monkeypatch, capsys
        )
        assert code == 2 and ("a part of the path is a file, not a folder" in out) and "free space" not in out, out


def _saved(tmp_path: Path, names: list[str]) -> Path:
    import datasets

    rows = {
        "text": [f"review number {i} was {'good' if i % 3 else 'bad'}" for i in range(60)],
        "label": [i % 3 for i in range(60)],
    }
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    study = study_dict(
        study={"n_trials": 1},
        data={
            "source": {"type": "disk", "path": "saved"},
            "text_fields": ["text"],
            "max_train_samples": None,
            "max_eval_samples": None,
        },
    )
    return write_study(tmp_path, study)


def test_classlabel_names_keep_their_id_order_and_an_edit_of_them_is_seen(tmp_path: Path) -> None:
    path = _saved(tmp_path, ["neg", "pos", "mixed"])
    assert prepare_data(load_spec(path)).label_names == ["neg", "pos", "mixed"]  # the dataset's ids, not sorted
    info = tmp_path / "saved" / "dataset_info.json"
    meta = json.loads(info.read_text())
    meta["features"]["label"]["names"] = ["bad", "good", "so-so"]
    info.write_text(json.dumps(meta, indent=2))
    assert prepare_data(load_spec(path)).label_names == ["bad", "good", "so-so"]  # not the cached old names


def test_a_validation_split_without_entities_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    train = [{"tokens": ["ann", "met", f"w{i}"], "ner": ["B-PER", "O", "O"]} for i in range(40)]
    validation = [{"tokens": ["it", "rained", f"w{i}"], "ner": ["O", "O", "O"]} for i in range(10)]
    for name, rows in (("train", train), ("validation", validation)):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    study = study_dict(
        model={"task": "token_classification"},
        study={"objective": {"metric": "f1"}},
        data={
            "source": {
                "type": "files",
                "format": "jsonl",
                "paths": {"train": "train.jsonl", "validation": "validation.jsonl"},
            },
            "text_fields": ["tokens"],
            "label_field": "ner",
            "split": None,
        },
    )
    code, out = run_cli(["validate", str(write_study(tmp_path, study))], monkeypatch, capsys)
    assert code == 2 and "the validation split has no entity" in out, out


def test_validate_checks_the_storage_as_run_would(tmp_path: Path, monkeypatch, capsys) -> None:
    for url, expect in (
        ("sqlite:///nosuch/x.db", "nosuch does not exist"),
        ("SQLITE:///x.db", "is not a database SQLAlchemy can open here"),
    ):
        path = write_study(tmp_path, study_dict(study={"storage": url}))
        code, out = run_cli(["validate", "--no-data", str(path)], monkeypatch, capsys)
        assert code == 2 and expect in out, out


def test_blank_labels_and_conflicting_repeats_are_counted(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = [f"stall {i} was good,{'pos' if i % 2 else 'neg'}" for i in range(60)]
    rows[4] = "stall 4 was good,"  # a blank label
    rows += ["stall 5 was good,neg", "stall 7 was good,pos"]  # a repeat with another label, and an exact repeat
    (tmp_path / "reviews.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    path = _review_study(tmp_path)
    study = yaml.safe_load(path.read_text())
    study["data"]["drop_blank_labels"] = True
    path.write_text(yaml.safe_dump(study))
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0 and "rows with a blank label, left out (data.drop_blank_labels): train 1 of 62" in out, out
    assert "(data.deduplicate): train 2 of 62 source rows" in out
    assert "rows whose text repeats an earlier row with another label (the first label was kept" in out
    assert ": train 1" in out.split("with another label")[1]

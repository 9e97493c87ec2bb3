"""Data and model inputs as users bring them: blank labels, other delimiters, relative model paths."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import run_cli

from adalora_search.study.loader import load_spec
from adalora_search.tasks import get_task
from adalora_search.train import splits
from adalora_search.train.assets import resolve_model

CORPUS = Path(__file__).parent / "bad_studies"
FIELD = Path(__file__).parent / "field_cases"


def _fixed(tmp_path: Path, name: str, **data: object) -> Path:
    """A copy of a bad-studies corpus file with the fix applied to its data section."""
    shutil.copytree(CORPUS / "data", tmp_path / "data")
    study = yaml.safe_load((CORPUS / f"{name}.yaml").read_text())
    for key, value in data.items():
        if key == "source":
            study["data"]["source"].update(value)
        else:
            study["data"][key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_dropping_blank_labels_is_explicit_and_validate_lists_class_counts(tmp_path, monkeypatch, capsys) -> None:
    path = _fixed(tmp_path, "blank_labels", drop_blank_labels=True)
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0, out
    assert "2 classes in train: business" in out and "sport" in out


def test_csv_delimiter_option_reads_the_file(tmp_path, monkeypatch, capsys) -> None:
    path = _fixed(
        tmp_path, "csv_other_delimiter", source={"delimiter": ";"}, split={"validation": 0.5, "test": 0.0, "seed": 0}
    )
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0, out
    spec = load_spec(path)
    read = splits.load_splits(spec.data, get_task(spec.model.task))
    got = sorted((text, label) for split in read.values() for text, label in zip(split["text"], split["label"]))
    with (tmp_path / "data" / "semicolon.csv").open(newline="") as f:
        expected = sorted((row["text"], row["label"]) for row in csv.DictReader(f, delimiter=";"))
    assert len(expected) >= 4 and got == expected  # every row, text and label as written (train + validation)
    assert {len(split) for split in read.values()} == {len(expected) // 2}  # validation: 0.5


def test_relative_model_directory_resolves_against_the_study_file(tmp_path, monkeypatch, capsys) -> None:
    """Field case 09: a GPT-2 model beside the study file (c_attn is a transformers Conv1D)."""
    shutil.copytree(FIELD / "case09", tmp_path / "case09")
    for name in ("vocab.txt", "tokenizer.json"):
        source = Path(resolve_model("minilm-l6")) / name
        if source.exists():
            shutil.copy(source, tmp_path / "case09" / "tiny-gpt2" / name)
    monkeypatch.chdir(tmp_path)  # not the study file's folder
    code, out = run_cli(["validate", "case09/study.yaml"], monkeypatch, capsys)
    assert code == 0, out
    assert "c_attn: 2 matrices" in out
    code, out = run_cli(["run", "case09/study.yaml"], monkeypatch, capsys)
    assert code == 0, out
    assert "best trial" in out


def _checkpoint_with_head(directory: Path, num_labels: int) -> Path:
    """A tiny BERT classifier saved with a trained head of ``num_labels`` (MiniLM's tokenizer)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = directory / "ckpt"
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model("minilm-l6")).save_pretrained(path)
    return path


def test_head_of_another_size_is_refused_before_trial_0_unless_asked(tmp_path, monkeypatch, capsys) -> None:
    """Issue #12 item 1: a checkpoint whose head size differs from the task's ('ignore_mismatched_sizes')."""
    from conftest import study_dict, write_study

    ckpt = _checkpoint_with_head(tmp_path, 3)  # BBC News has 5 topics
    study = study_dict(model={"name_or_path": str(ckpt), "init": "pretrained", "config_overrides": {}})
    path = write_study(tmp_path, study)
    code, out = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 2 and "model.ignore_mismatched_sizes = False" in out
    assert "head has 3 outputs but model.task classification needs 5 here" in out
    assert not list(tmp_path.glob("*.db"))
    study["model"]["ignore_mismatched_sizes"] = True
    path = write_study(tmp_path, study)
    code, out = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 0, out


def test_a_regression_study_on_a_classifier_checkpoint_is_refused_in_validate(tmp_path, monkeypatch, capsys) -> None:
    """Issue #21 item 8: the head check did not cover regression (validate exited 0, trial 0 failed)."""
    from conftest import study_dict, write_study

    ckpt = _checkpoint_with_head(tmp_path, 3)  # an NLI-style classifier; regression needs one output
    rows = "\n".join(f"sentence number {i} is {'good' if i % 2 else 'bad'},{(i % 5) / 4}" for i in range(60))
    (tmp_path / "r.csv").write_text("text,score\n" + rows + "\n")
    study = study_dict(
        model={"name_or_path": str(ckpt), "init": "pretrained", "config_overrides": {}, "task": "regression"},
        study={"objective": {"metric": "pearson"}},
        data={
            "source": {"type": "files", "format": "csv", "paths": {"train": "r.csv"}},
            "text_fields": ["text"],
            "label_field": "score",
            "split": {"validation": 0.3},
        },
    )
    code, out = run_cli(["validate", str(write_study(tmp_path, study))], monkeypatch, capsys)
    assert code == 2 and "head has 3 outputs but model.task regression needs 1 here" in out, out
    assert "study.yaml:" in out  # located in the study file


def _rows(n: int, offset: int = 0) -> dict[str, list]:
    """Unique headlines of two topics (repeated rows would be removed by data.deduplicate)."""
    topics = ["sport", "tech"]
    return {
        "headline": [f"headline {i + offset} on {topics[i % 2]} news" for i in range(n)],
        "label": [topics[i % 2] for i in range(n)],
    }


def _disk_study(tmp_path: Path, path: str, **data: object) -> Path:
    from conftest import study_dict, write_study

    study = study_dict(study={"n_trials": 1})
    study["data"] = {"source": {"type": "disk", "path": path}, "text_fields": ["headline"], "max_length": 24, **data}
    return write_study(tmp_path, study)


def test_saved_dataset_dict_gives_its_splits_by_name(tmp_path, monkeypatch, capsys) -> None:
    """Issue #16 item 2: a DatasetDict written by save_to_disk, path relative to the study file."""
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(_rows(40)),
            "dev": datasets.Dataset.from_dict(_rows(12, 100)),
            "test": datasets.Dataset.from_dict(_rows(10, 200)),
        }
    ).save_to_disk(str(tmp_path / "saved"))
    path = _disk_study(tmp_path, "saved", splits={"validation": "dev"})
    monkeypatch.chdir(tmp_path.parent)  # not the study file's folder
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0, out
    assert "data: train 40, validation 12, test 10 rows" in out
    code, out = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 0, out
    assert "best trial" in out


def test_saved_single_dataset_is_split_like_one_file(tmp_path, monkeypatch, capsys) -> None:
    import datasets

    datasets.Dataset.from_dict(_rows(40)).save_to_disk(str(tmp_path / "saved"))
    path = _disk_study(tmp_path, str(tmp_path / "saved"))
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 2 and "no validation split" in out and "data.split" in out
    path = _disk_study(tmp_path, str(tmp_path / "saved"), split={"validation": 0.25, "test": 0.25, "seed": 0})
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0, out
    assert "data: train 20, validation 10, test 10 rows" in out
    # saved again with other rows: the tokenized-data cache follows the content, not the path
    shutil.rmtree(tmp_path / "saved")
    datasets.Dataset.from_dict(_rows(80)).save_to_disk(str(tmp_path / "saved"))
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0 and "data: train 40, validation 20, test 20 rows" in out, out


def test_a_directory_that_is_not_a_saved_dataset_exits_2(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "csvs").mkdir()
    (tmp_path / "csvs" / "train.csv").write_text("headline,label\na,sport\n")
    for where, expected in (("csvs", "not a dataset saved with save_to_disk"), ("absent", "no such directory")):
        code, out = run_cli(["validate", str(_disk_study(tmp_path, where))], monkeypatch, capsys)
        assert code == 2 and f"data.source.path = '{tmp_path / where}'" in out and expected in out, out
        assert "Traceback" not in out


def test_a_head_of_another_kind_and_size_is_found_from_the_checkpoint_shapes(tmp_path, monkeypatch, capsys) -> None:
    """A token-classification checkpoint (9 tags) for 5-topic classification: its config names no sequence
    head, but its `classifier` tensors have 9 rows; loading would fail in trial 0."""
    from conftest import study_dict, write_study
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    ckpt = tmp_path / "ner-ckpt"
    BertForTokenClassification(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=9,
        )
    ).save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(resolve_model("minilm-l6")).save_pretrained(ckpt)
    study = study_dict(model={"name_or_path": str(ckpt), "init": "pretrained", "config_overrides": {}})
    code, out = run_cli(["validate", str(write_study(tmp_path, study))], monkeypatch, capsys)
    assert code == 2 and "head has 9 outputs but model.task classification needs 5 here" in out, out


def test_a_split_labelled_minus_one_is_no_label_and_the_fix_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    """Field case case52: a GLUE-style test split labelled -1 was refused naming data.label_names, which the
    study does not set, and not the fix (``data.splits.test: null``)."""
    shutil.copytree(FIELD / "case52", tmp_path / "case52")
    monkeypatch.chdir(tmp_path / "case52")
    subprocess.run([sys.executable, "make_data.py"], check=True, capture_output=True)
    code, out = run_cli(["validate", "study.yaml"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out
    assert "the test split has label -1" in out and '"no label"' in out and "data.splits.test: null" in out
    assert "data.label_names" not in out
    code, out = run_cli(["validate", "study_control.yaml"], monkeypatch, capsys)
    assert code == 0, out


def test_validate_without_data_refuses_a_packaged_dataset_that_does_not_exist(tmp_path: Path, monkeypatch, capsys):
    """#32 item 7: ``validate --no-data`` accepted ``data.source: oops``."""
    from conftest import study_dict, write_study

    from adalora_search.study.data_sources import PACKAGED_DATASETS
    from adalora_search.train.assets import DATASETS

    assert list(DATASETS) == list(PACKAGED_DATASETS)  # the names the schema knows are the ones that load
    path = write_study(tmp_path, study_dict(data={"source": "oops"}))
    code, out = run_cli(["validate", "--no-data", str(path)], monkeypatch, capsys)
    assert code == 2 and "data.source = 'oops': unknown packaged dataset 'oops'" in out and "Traceback" not in out


def test_config_overrides_are_checked_against_the_models_config_all_at_once(tmp_path: Path, monkeypatch, capsys):
    """#32 item 7 and #35 item 9: ``intermediate_size: -1`` ended in a PyTorch traceback; a misspelt field was
    silently ignored; the num_labels refusal hid the problems behind it."""
    from conftest import TINY_MODEL, study_dict, write_study

    overrides = {**TINY_MODEL["config_overrides"], "intermediate_size": -1, "num_hidden_layer": 2}
    overrides |= {"hidden_dropout_prob": 1.5, "hidden_act": 3, "num_labels": 1}
    path = write_study(tmp_path, study_dict(model={**TINY_MODEL, "config_overrides": overrides}))
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 2 and "5 problem(s) with model.config_overrides" in out and "Traceback" not in out
    for expected in (
        "model.config_overrides.num_labels = 1: model.task classification sets it from the data",
        "model.config_overrides.intermediate_size = -1: must be a positive whole number",
        "model.config_overrides.num_hidden_layer = 2: BertConfig has no field 'num_hidden_layer'; did you mean "
        "num_hidden_layers",
        "model.config_overrides.hidden_dropout_prob = 1.5: must be a probability between 0 and 1",
        "model.config_overrides.hidden_act = 3: must be text",
    ):
        assert expected in out, expected
    assert f"{path}:" in out  # file:line

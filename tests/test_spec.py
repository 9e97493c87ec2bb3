"""Study files: shipped studies validate, the schema accepts them, rules reject bad corners."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import optuna
import pydantic
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO, study_dict

from adalora_search.cli import cli
from adalora_search.errors import UserError
from adalora_search.study.distributions import Choices, FloatRange
from adalora_search.study.loader import load_spec, parse_spec
from adalora_search.study.space import KNOBS, sample, searched_knobs
from adalora_search.study.spec import StudySpec

STUDIES = sorted((REPO / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_study_validates_and_starts_with_its_command(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, StudySpec)
    assert path.read_text().splitlines()[0].startswith("# adalora-search run studies/")


def test_schema_is_json_schema_accepting_every_shipped_study() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in STUDIES:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"study": {"name": "x"}, "bogus": 1}, schema)


def test_models_are_frozen_and_forbid_extra_keys() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict()))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.training.batch_size = 3  # type: ignore[misc]
    with pytest.raises(UserError, match="unknown key"):
        parse_spec(yaml.safe_dump(study_dict(training={"batchsize": 3})))


def test_all_problems_are_reported_at_once() -> None:
    bad = study_dict(adalora={"init_r": 4, "target_r": 4, "beta1": 1.5}, training={"batch_size": 0})
    with pytest.raises(UserError) as info:
        parse_spec(yaml.safe_dump(bad))
    fields = {p.field for p in info.value.problems}
    assert "training.batch_size" in fields  # field errors first; rules run once fields parse
    bad["training"]["batch_size"] = 8
    with pytest.raises(UserError) as info:
        parse_spec(yaml.safe_dump(bad))
    assert {"adalora.target_r", "adalora.beta1"} <= {p.field for p in info.value.problems}


def test_knob_forms_fixed_range_and_list_choices() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict(
        training={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        adalora={"target_modules": {"choices": [["query"], ["query", "value"]]}, "init_r": 6, "target_r": 2})))
    searched = dict(searched_knobs(spec))
    assert isinstance(searched["training.learning_rate"], FloatRange)
    assert isinstance(searched["adalora.target_modules"], Choices)
    assert set(searched) == {"training.learning_rate", "adalora.target_modules"}


def test_sample_with_fixed_trial_gives_a_concrete_config() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict(
        training={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        adalora={"target_modules": {"choices": [["query"], ["query", "value"]]}, "init_r": {"low": 4, "high": 8},
                 "target_r": {"choices": [1, 2, 3]}})))
    trial = optuna.trial.FixedTrial({"training.learning_rate": 3e-3, "adalora.target_modules": "query,value",
                                     "adalora.init_r": 6, "adalora.target_r": 2})
    cfg = sample(spec, trial)
    assert cfg.training.learning_rate == 3e-3
    assert cfg.adalora.target_modules == ["query", "value"]
    assert (cfg.adalora.init_r, cfg.adalora.target_r) == (6, 2)
    assert cfg.adalora.schedule.unit == "steps" and cfg.adalora.schedule.t_init == 2


def test_sampling_every_corner_never_gives_target_r_ge_init_r() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict(adalora={"init_r": {"low": 6, "high": 12},
                                                         "target_r": {"low": 1, "high": 5}})))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        cfg = sample(spec, study.ask())
        assert cfg.adalora.target_r < cfg.adalora.init_r


def test_baseline_overrides_fixed_knobs_and_enqueues_searched_ones() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict(
        training={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        baselines=[{"name": "paper", "params": {"training.learning_rate": 5e-4, "adalora.orth_reg_weight": 0.1}}])))
    trial = optuna.trial.FixedTrial({"training.learning_rate": 5e-4})
    cfg = sample(spec, trial, spec.baselines[0].params)
    assert cfg.training.learning_rate == 5e-4 and cfg.adalora.orth_reg_weight == 0.1


def test_knob_paths_are_the_tunable_fields_of_the_schema() -> None:
    schema = StudySpec.model_json_schema()

    def resolve(node: dict) -> dict:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node

    for path in KNOBS:
        node = resolve(schema)
        for part in path.split("."):
            node = resolve(resolve(node)["properties"][part])
        forms = json.dumps(node)
        assert "Choices_" in forms, f"{path} cannot be searched in the schema"
    assert len(KNOBS) == 13 and "adalora.schedule.delta_t" in KNOBS and "adalora.schedule.unit" not in KNOBS


def test_validate_prints_a_summary_of_the_space(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study_dict(adalora={"init_r": {"low": 4, "high": 6}})))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "adalora.init_r" in result.output and "[4, 6]" in result.output
    assert "query,value: 4 matrices, b(0) 16..24 -> b(T) 8..8" in result.output
    assert "total optimizer steps per trial: 12" in result.output


def test_validate_warns_about_trust_remote_code(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study_dict(model={"trust_remote_code": True})))
    result = CliRunner().invoke(cli, ["validate", "--no-data", str(path)])
    assert result.exit_code == 0 and "trust_remote_code is true" in result.output

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
from adalora_search.study.spec import SCHEMA_ID, StudySpec

STUDIES = sorted((REPO / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_study_validates_and_starts_with_its_command(path: Path) -> None:
    spec = load_spec(path)
    assert spec.study_file == path.resolve() and spec.study.name
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


def _schema() -> dict:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    return json.loads(result.output)


def _properties(node: object, where: str = "") -> list[tuple[str, dict]]:
    """(where, schema) of every property declared anywhere in a JSON Schema."""
    found = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            found.append((f"{where}.{name}", prop))
        for key, value in node.items():
            found += _properties(value, f"{where}.{key}" if key != "properties" else where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _properties(item, f"{where}[{i}]")
    return found


def test_every_field_of_the_schema_is_described_with_its_default() -> None:
    """Issue #16 item 1: an editor shows what each key means (and its default) on hover."""
    schema = _schema()
    assert schema["$id"] == SCHEMA_ID and schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    properties = _properties(schema)
    assert len(properties) > 150  # every model of the spec, the baseline knob paths too
    undescribed = [
        where for where, prop in properties if not prop.get("description", "").split("Default:")[0].strip(" .")
    ]
    assert undescribed == []
    defs = schema["$defs"]
    assert defs["TrainingSpec"]["properties"]["batch_size"]["description"].endswith("Default: 32.")
    assert 'Default: ["query", "value"]' in defs["AdaLoraSpec"]["properties"]["target_modules"]["description"]
    assert "seconds" in defs["StudySection"]["properties"]["timeout"]["description"]


def test_a_study_with_the_editor_modeline_loads_and_validates(tmp_path: Path) -> None:
    (tmp_path / "study.schema.json").write_text(json.dumps(_schema()))
    path = tmp_path / "study.yaml"
    path.write_text(
        "# adalora-search run study.yaml\n# yaml-language-server: $schema=./study.schema.json\n"
        + yaml.safe_dump(study_dict())
    )  # the modeline as README shows it
    assert load_spec(path).study.name == "t"
    modeline = next(line for line in path.read_text().splitlines() if line.startswith("# yaml-language-server:"))
    modeline = modeline.split("$schema=")[1]  # what the editor resolves, relative to the study file
    schema = json.loads((path.parent / modeline).read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_schema_checks_baseline_knob_paths_and_value_types() -> None:
    schema = _schema()
    params = {"training.learning_rate": 1e-3, "adalora.init_r": 8, "adalora.target_modules": "query,value"}
    jsonschema.validate(study_dict(baselines=[{"name": "b", "params": params}]), schema)
    for bad in (
        {"adalora.init_rr": 8},
        {"adalora.init_r": "8"},
        {"adalora.init_r": 0},
        {"training.learning_rate": [1e-3]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(study_dict(baselines=[{"name": "b", "params": {**params, **bad}}]), schema)


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
    spec = parse_spec(
        yaml.safe_dump(
            study_dict(
                training={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                adalora={"target_modules": {"choices": [["query"], ["query", "value"]]}, "init_r": 6, "target_r": 2},
            )
        )
    )
    searched = dict(searched_knobs(spec))
    assert isinstance(searched["training.learning_rate"], FloatRange)
    assert isinstance(searched["adalora.target_modules"], Choices)
    assert set(searched) == {"training.learning_rate", "adalora.target_modules"}


def test_sample_with_fixed_trial_gives_a_concrete_config() -> None:
    spec = parse_spec(
        yaml.safe_dump(
            study_dict(
                training={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                adalora={
                    "target_modules": {"choices": [["query"], ["query", "value"]]},
                    "init_r": {"low": 4, "high": 8},
                    "target_r": {"choices": [1, 2, 3]},
                },
            )
        )
    )
    trial = optuna.trial.FixedTrial(
        {
            "training.learning_rate": 3e-3,
            "adalora.target_modules": "query,value",
            "adalora.init_r": 6,
            "adalora.target_r": 2,
        }
    )
    cfg = sample(spec, trial)
    assert cfg.training.learning_rate == 3e-3
    assert cfg.adalora.target_modules == ["query", "value"]
    assert (cfg.adalora.init_r, cfg.adalora.target_r) == (6, 2)
    assert cfg.adalora.schedule.unit == "steps" and cfg.adalora.schedule.t_init == 2


def test_sampling_every_corner_never_gives_target_r_ge_init_r() -> None:
    spec = parse_spec(
        yaml.safe_dump(study_dict(adalora={"init_r": {"low": 6, "high": 12}, "target_r": {"low": 1, "high": 5}}))
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        cfg = sample(spec, study.ask())
        assert cfg.adalora.target_r < cfg.adalora.init_r


def test_baseline_overrides_fixed_knobs_and_enqueues_searched_ones() -> None:
    spec = parse_spec(
        yaml.safe_dump(
            study_dict(
                training={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                baselines=[
                    {"name": "paper", "params": {"training.learning_rate": 5e-4, "adalora.orth_reg_weight": 0.1}}
                ],
            )
        )
    )
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
    assert "query,value: 4 matrices, b(0) 16..24 -> b(T) 8;" in result.output
    assert "total optimizer steps per trial: 12" in result.output


def test_validate_warns_about_trust_remote_code(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study_dict(model={"trust_remote_code": True})))
    result = CliRunner().invoke(cli, ["validate", "--no-data", str(path)])
    assert result.exit_code == 0 and "trust_remote_code is true" in result.output

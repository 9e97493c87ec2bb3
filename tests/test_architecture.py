"""The package's shape, checked rather than promised: import layers, Optuna's private API in one module,
stored results read through typed records, and every knob of the study file reaching what it configures.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from conftest import study_dict

from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import parse_spec
from adalora_search.study.space import KNOBS, knob, sample
from adalora_search.train import modeling
from adalora_search.train.engine import TrialRun

PACKAGE = Path(__file__).resolve().parents[1] / "adalora_search"
# lowest first: a module may import its own layer and the layers below it, never one above
LAYERS = [
    {"errors", "files", "urls", "_lazy"},
    {"tasks"},
    {"study"},
    {"train"},
    {"search"},
    {"results"},
    {"app"},
    {"api"},
    {"cli", "__main__", "__init__"},
]


def _modules() -> dict[str, ast.Module]:
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): ast.parse(p.read_text())
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if "." in module else "__init__"
    return next((i for i, names in enumerate(LAYERS) if part in names), None)


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import that runs (function-level ones too; ``if TYPE_CHECKING:`` left out)."""
    guards = [node for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]
    skipped = {id(n) for guard in guards for child in guard.body for n in ast.walk(child)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [(node.lineno, node.module)]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in out if name == "adalora_search" or name.startswith("adalora_search.")]


def test_no_import_runs_back_up_the_layers() -> None:
    modules = _modules()
    unplaced = [m for m in modules if _layer(m) is None]
    assert unplaced == []  # a new subpackage must be given its layer here
    upward = [
        f"{m}:{line} imports {target}"
        for m, tree in modules.items()
        for line, target in _runtime_imports(tree)
        if target != "adalora_search" and _layer(target) > _layer(m)
    ]
    assert upward == []


def _optuna_private_names() -> set[str]:
    study = optuna.create_study()
    trial = study.ask()
    grid = optuna.samplers.GridSampler({"x": [1, 2]})
    objects = [study, trial, study.trials[0], grid, study._storage]  # noqa: SLF001 - what the test looks for
    return {n for o in objects for n in [*vars(o), *dir(type(o))] if n.startswith("_") and not n.startswith("__")}


def test_optunas_private_api_is_used_in_one_module_only() -> None:
    private = _optuna_private_names()
    assert {"_storage", "_study_id", "_trial_id"} <= private
    found = [
        f"{m}:{node.lineno} .{node.attr}"
        for m, tree in _modules().items()
        if not m.endswith("optuna_internals")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in private
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert found == []


def test_stored_results_are_read_through_typed_records() -> None:
    untyped = re.compile(r"\.get\([^()]*\)\s*or\s*(\{\}|\[\])")
    found = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if untyped.search(line)
    ]
    assert found == []
    readers = [p.name for p in (PACKAGE / "results").glob("*.py") if "user_attrs" in p.read_text()]
    assert readers == []  # results/ reads trials and studies as TrialRecord / StudyRecord / ReferenceResult


class _Recorder:
    """Stands in for ``TrainingSpec``; remembers every field read through it."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped, self.read = wrapped, set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self.wrapped, name)


def test_every_knob_reaches_what_it_configures(monkeypatch: pytest.MonkeyPatch) -> None:
    """An adalora.* knob reaches PEFT's AdaLoraConfig (PEFT_NAMES, or the schedule in steps); a training.* knob
    is read by the training run. Each knob gets a value of its own, so a knob without a consumer fails here.
    """
    spec = parse_spec(
        yaml.safe_dump(
            study_dict(
                training={"max_steps": 10, "eval_every": 5, "learning_rate": 3.0e-3, "weight_decay": 0.07},
                adalora={
                    "target_modules": ["query", "value"],
                    "init_r": 5,
                    "target_r": 3,
                    "lora_alpha": 7.0,
                    "lora_dropout": 0.05,
                    "beta1": 0.81,
                    "beta2": 0.82,
                    "orth_reg_weight": 0.3,
                    "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 2},
                },
            )
        )
    )
    cfg = sample(spec, optuna.trial.FixedTrial({}))
    recorder = _Recorder(cfg.training)
    optimizers: list[dict[str, Any]] = []

    class AdamW(torch.optim.AdamW):
        def __init__(self, params: Any, **kwargs: Any) -> None:
            optimizers.append(kwargs)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", AdamW)
    run = TrialRun(cfg.model_copy(update={"training": recorder}), prepare_data(spec))
    run.train()
    peft = run.model.peft_config["default"]
    names = {**modeling.PEFT_NAMES, **modeling.SCHEDULE_NAMES}
    for path in KNOBS:
        section, field = path.split(".", 1)
        if section == "adalora":
            assert field in names, f"{path} is sampled and fingerprinted but never given to PEFT"
            expected = knob(cfg, path)
            if field in modeling.SCHEDULE_NAMES:
                expected = dict(
                    zip(
                        ("schedule.t_init", "schedule.t_final"),
                        modeling.schedule_steps(cfg.adalora.schedule, run.total_steps),
                    )
                )[field]
            got = getattr(peft, names[field])
            assert (sorted(got) if field == "target_modules" else got) == expected, path
        else:
            assert section == "training" and field in recorder.read, f"{path} is sampled but the run never reads it"
    assert (optimizers[0]["lr"], optimizers[0]["weight_decay"]) == (3.0e-3, 0.07)  # the values, not only a read


def test_the_public_api_is_visible_to_editors_as_it_is_at_runtime() -> None:
    """#36 item 5: ``adalora_search`` exported only through ``__getattr__``: editors saw ``run`` as ``Any``. The
    ``TYPE_CHECKING`` re-exports name exactly the lazily exported names, and the package ships ``py.typed``."""
    import adalora_search

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    guard = next(n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))
    seen = {alias.asname or alias.name for node in guard.body for alias in node.names}
    assert seen == set(adalora_search.__all__)
    assert all(getattr(adalora_search, name) is not None for name in seen)
    assert (PACKAGE / "py.typed").is_file()

"""Compiled trials (``training.compile``): the same training as eager, no recompilation from rank pruning,
and an eager fallback instead of a failed trial. Inductor compiles on this CPU (gcc), ~1 min per graph."""

from __future__ import annotations

import logging

import optuna
import pytest
import torch
import yaml
from conftest import study_dict

from adalora_search.search import fingerprint
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import parse_spec
from adalora_search.study.space import sample
from adalora_search.train import compiling
from adalora_search.train.data import batches
from adalora_search.train.engine import TrialRun

# rank pruning at steps 2, 4, 6 (t_init 2, delta_t 2), the final allocation from step 7 on
SCHEDULE = {
    "target_modules": ["query", "value"],
    "init_r": 4,
    "target_r": 2,
    "lora_alpha": 8.0,
    "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 2},
}


def traced_run(monkeypatch: pytest.MonkeyPatch, **training) -> tuple[TrialRun, list[dict]]:
    """A trial on the tiny BERT whose micro-steps are recorded: loss, batch shape, graphs compiled so far."""
    spec = parse_spec(
        yaml.safe_dump(
            study_dict(
                training={"max_steps": 10, "max_grad_norm": 1.0, **training},
                data={"pad_to_multiple_of": 8},
                adalora=SCHEDULE,
            )
        )
    )
    run = TrialRun(sample(spec, optuna.trial.FixedTrial({})), prepare_data(spec))
    steps: list[dict] = []
    real = run._forward_backward

    def recorded(batch):
        before = compiling._graph_count()
        loss, restarted = real(batch)
        steps.append(
            {
                "loss": float(loss),
                "shape": tuple(batch["input_ids"].shape),
                "new_graphs": compiling._graph_count() - before,
            }
        )
        return loss, restarted

    monkeypatch.setattr(run, "_forward_backward", recorded)
    return run, steps


@pytest.mark.slow
def test_compiled_trial_trains_like_eager_and_rank_pruning_never_recompiles(monkeypatch) -> None:
    # dropout in compiled code draws from the eager generator, so both runs see the same masks
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    eager_run, eager = traced_run(monkeypatch)
    eager_result = eager_run.train()
    run, compiled = traced_run(monkeypatch, compile=True)
    result = run.train()

    assert [s["loss"] for s in compiled] == pytest.approx([s["loss"] for s in eager], rel=1e-5, abs=1e-6)
    assert result.rank_allocation == eager_result.rank_allocation
    assert result.budget_curve == eager_result.budget_curve
    assert result.metrics["final"]["eval_loss"] == pytest.approx(eager_result.metrics["final"]["eval_loss"], rel=1e-5)
    # a graph is compiled only for a batch shape not seen before (the second one makes it dynamic); the
    # in-place masking of rank pruning, the regularizer and clipping add none
    seen: set[tuple[int, int]] = set()
    for step in compiled:
        assert not (step["new_graphs"] and step["shape"] in seen), f"recompiled for a known shape: {compiled}"
        seen.add(step["shape"])
    last_compile = max(i for i, s in enumerate(compiled) if s["new_graphs"])  # micro-step i is optimizer step i + 1
    pruning_steps = [step for step, _ in result.budget_curve[1:]]
    assert [step for step in pruning_steps if step > last_compile + 1], f"no rank pruning after {compiled}"
    timing = result.timing["compile"]
    assert timing["graphs"] == sum(s["new_graphs"] for s in compiled)
    assert timing["compile_s"] > 0 and "fallback" not in timing


def failing_compile(error: Exception, at_call: int):
    """A stand-in for torch.compile whose compiled function runs eagerly, then raises ``error`` at call ``at_call``."""
    calls = {"n": 0}

    def compile_(fn, **options):
        def compiled(batch):
            calls["n"] += 1
            if calls["n"] == at_call:
                raise error
            return fn(batch)

        return compiled

    return compile_, calls


def test_a_trial_that_cannot_compile_goes_on_eager_with_the_reason(monkeypatch, caplog) -> None:
    # the second micro-batch of step 2: a recompile that fails, as inductor reports it
    error = torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("C++ compiler not found"), None)
    compile_, calls = failing_compile(error, at_call=4)
    monkeypatch.setattr(compiling.torch, "compile", compile_)
    run, steps = traced_run(monkeypatch, compile={"mode": "default"}, gradient_accumulation=2)
    with caplog.at_level(logging.WARNING, logger="adalora_search"):
        result = run.train()
    assert result.timing["steps"] == 10  # the trial went on: every optimizer step was taken
    assert "RuntimeError: C++ compiler not found" in result.timing["compile"]["fallback"]
    assert result.timing["compile"]["fallback"].startswith("BackendCompilerFailed: ")
    assert "this trial goes on eager" in caplog.text
    assert calls["n"] == 4  # after the failure, never compiled again
    assert len(steps) == 21  # step 2's first micro-batch is dropped with its cleared gradient, its second re-run


def test_an_error_of_the_training_itself_is_not_taken_for_a_compile_failure(monkeypatch) -> None:
    compile_, _ = failing_compile(RuntimeError("device-side assert triggered"), at_call=3)
    monkeypatch.setattr(compiling.torch, "compile", compile_)
    run, _ = traced_run(monkeypatch, compile=True)
    with pytest.raises(RuntimeError, match="device-side assert"):
        run.train()


def test_fullgraph_with_a_graph_break_falls_back_naming_where(monkeypatch) -> None:
    from adalora_search.train import regularizer

    real = regularizer.OrthogonalRegularizer.loss

    def with_break(self):
        torch._dynamo.graph_break()
        return real(self)

    monkeypatch.setattr(regularizer.OrthogonalRegularizer, "loss", with_break)
    run, _ = traced_run(monkeypatch, compile={"fullgraph": True})
    result = run.train()
    fallback = result.timing["compile"]["fallback"]
    assert "graph_break" in fallback or "graph break" in fallback.lower(), fallback
    assert "test_compile.py" in fallback  # where the break is
    assert result.timing["steps"] == 10


def test_pad_to_multiple_of_rounds_batch_widths_up_to_max_length() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict(data={"max_length": 20})))
    data = prepare_data(spec)
    split = data.splits["train"]
    widths = {
        b["input_ids"].shape[1] for b in batches(split, 8, data.pad_token_id, 0, pad_to_multiple_of=8, max_width=20)
    }
    natural = {b["input_ids"].shape[1] for b in batches(split, 8, data.pad_token_id, 0)}
    assert widths <= {8, 16, 20} and len(widths) < len(natural)
    assert all(w % 8 == 0 or w == 20 for w in widths)
    for b in batches(split, 8, data.pad_token_id, 0, pad_to_multiple_of=8, max_width=20):
        assert b["attention_mask"].sum(1).max() <= b["input_ids"].shape[1]  # padding only, no row cut


def test_compile_and_padding_are_run_options_not_part_of_the_fingerprint() -> None:
    plain = parse_spec(yaml.safe_dump(study_dict()))
    compiled = parse_spec(
        yaml.safe_dump(study_dict(training={"compile": {"mode": "reduce-overhead"}}, data={"pad_to_multiple_of": 8}))
    )
    assert fingerprint.hashes(fingerprint.sections(plain)) == fingerprint.hashes(fingerprint.sections(compiled))


def test_status_says_compile_time_and_each_fallback() -> None:
    from optuna.trial import create_trial

    from adalora_search.search.status import status_data, status_lines

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("objectives", [{"metric": "accuracy", "direction": "maximize"}])
    metrics = {"final": {"accuracy": 0.9}}
    study.add_trial(
        create_trial(
            value=0.9,
            user_attrs={
                "metrics": metrics,
                "timing": {"wall_s": 100.0, "compile": {"mode": "default", "graphs": 2, "compile_s": 40.0}},
            },
        )
    )
    study.add_trial(
        create_trial(
            value=0.8,
            user_attrs={
                "metrics": metrics,
                "timing": {
                    "wall_s": 60.0,
                    "compile": {
                        "mode": "default",
                        "graphs": 0,
                        "compile_s": 0.0,
                        "fallback": "Unsupported: graph break; File x.py, line 3",
                    },
                },
            },
        )
    )
    study.add_trial(create_trial(value=0.7, user_attrs={"metrics": metrics, "timing": {"wall_s": 50.0}}))
    lines = status_lines(study)
    assert (
        "compiled trials: 2, compile time 40 s of 160 s trial wall time (median 20.0 s per trial, at most "
        "2 graphs per trial)"
    ) in lines
    assert "WARNING: trial 1 could not compile and ran eager: Unsupported: graph break; File x.py, line 3" in lines
    assert [row["compile"] for row in status_data(study)["trials"]][2] is None

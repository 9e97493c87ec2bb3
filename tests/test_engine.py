"""The trial engine on a tiny BERT built from a config: every PEFT AdaLoRA pitfall has a test."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import yaml
from conftest import study_dict
from peft.tuners.lora import LoraLayer

from adalora_search.errors import TrialFailure
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import parse_spec
from adalora_search.study.space import LoraKnobs, TrialConfig, sample
from adalora_search.train import modeling
from adalora_search.train.engine import TrialRun


def make_run(**sections) -> TrialRun:
    spec = parse_spec(yaml.safe_dump(study_dict(**sections)))
    return TrialRun(sample(spec, optuna.trial.FixedTrial({})), prepare_data(spec))


def test_update_and_allocate_once_per_optimizer_step_after_step_before_zero_grad() -> None:
    run = make_run(training={"gradient_accumulation": 3, "max_steps": 8})
    optimizer_steps: list[int] = []
    calls: list[tuple[int, int, bool]] = []
    original_step = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        optimizer_steps.append(1)
        return original_step(self, *args, **kwargs)

    real = run.model.base_model.update_and_allocate

    def spy(step: int) -> None:
        grads = [p.grad for n, p in run.model.named_parameters() if "lora_A" in n]
        calls.append((step, len(optimizer_steps), all(g is not None for g in grads)))
        real(step)

    run.model.base_model.update_and_allocate = spy
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", counting_step)
        run.train()
    assert [c[0] for c in calls] == list(range(1, 9))  # once per optimizer step, not per micro-batch
    assert all(step == n_steps for step, n_steps, _ in calls)  # after optimizer.step()
    assert all(has_grad for _, _, has_grad in calls)  # before zero_grad()
    assert run.result.timing["steps"] == 8


def test_rank_allocation_sums_exactly_to_the_target_budget() -> None:
    run = make_run(adalora={"target_modules": ["query", "key", "value", "dense"], "init_r": 6, "target_r": 2})
    result = run.train()
    n_matrices = len(modeling.adapted_modules(run.model))
    assert sum(result.rank_allocation.values()) == 2 * n_matrices
    assert result.final_allocation_done
    assert result.budget_curve[0] == [0, 6 * n_matrices]
    assert result.budget_curve[-1][1] == 2 * n_matrices
    totals = [total for _, total in result.budget_curve]
    assert totals == sorted(totals, reverse=True)  # the budget only shrinks


def test_final_allocation_happens_even_if_the_final_step_is_skipped() -> None:
    run = make_run()
    real = run.model.base_model.update_and_allocate
    final_step = run.model.peft_config["default"].total_step - run.model.peft_config["default"].tfinal

    def skipping(step: int) -> None:
        if step < final_step:  # the run "ends" before total_step - tfinal
            real(step)

    run.model.base_model.update_and_allocate = skipping
    result = run.train()
    assert result.final_allocation_done
    assert sum(result.rank_allocation.values()) == 2 * len(result.rank_allocation)


def test_orthogonal_regularizer_in_training_loss_not_in_evaluation() -> None:
    run = make_run(adalora={"orth_reg_weight": 5.0})
    batch = next(iter(__import__("adalora_search.train.data", fromlist=["batches"]).batches(
        run.data.splits["validation"], 16, run.data.pad_token_id, None)))
    run.model.eval()
    with torch.no_grad():
        train_loss = float(run.model(**batch).loss)  # labels given: PEFT adds the regularizer
        logits = run.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    plain = float(torch.nn.functional.cross_entropy(logits, batch["labels"]))
    assert train_loss > plain + 0.1
    scores = run.evaluate("validation")
    assert scores["eval_loss"] < train_loss  # the evaluation loss is plain cross-entropy
    assert math.isfinite(scores["accuracy"])


def test_target_r_ge_init_r_never_reaches_peft() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict()))
    cfg = sample(spec, optuna.trial.FixedTrial({}))
    data = cfg.model_dump()
    data["adalora"]["target_r"] = data["adalora"]["init_r"]
    with pytest.raises(ValueError, match="target_r must be < init_r"):
        TrialConfig.model_validate(data)


def test_allocation_is_copied_out_of_peft_rank_pattern(tmp_path) -> None:
    run = make_run()
    result = run.train()
    before = dict(result.rank_allocation)
    run.save_adapter(str(tmp_path / "adapter"))  # PEFT rewrites rank_pattern keys on save
    config = run.model.peft_config["default"]
    for mask in config.rank_pattern.values():
        mask[:] = [False] * len(mask)  # and a later in-place mutation
    assert result.rank_allocation == before
    assert all(isinstance(v, int) for v in before.values())


def test_nan_loss_fails_the_trial_with_its_reason() -> None:
    run = make_run()
    original = run.model.forward

    def nan_forward(*args, **kwargs):
        out = original(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    run.model.forward = nan_forward
    with pytest.raises(TrialFailure, match="non-finite training loss"):
        run.train()


def test_cpu_runs_are_deterministic() -> None:
    a, b = make_run().train(), make_run().train()
    assert a.rank_allocation == b.rank_allocation
    assert a.metrics["final"]["eval_loss"] == pytest.approx(b.metrics["final"]["eval_loss"], abs=1e-6)


def test_on_eval_is_called_every_n_steps_with_metrics() -> None:
    seen: list[tuple[int, dict]] = []
    make_run().train(lambda step, scores: seen.append((step, scores)))
    assert [s for s, _ in seen] == [4, 8, 12]
    assert {"accuracy", "f1_macro", "mcc", "eval_loss", "budget"} <= set(seen[-1][1])


def test_trainable_params_drop_after_rank_pruning() -> None:
    result = make_run().train()
    params = result.trainable_params
    assert params["final"] < params["initial"] < params["model_total"]


def test_lora_and_full_methods_train() -> None:
    spec = parse_spec(yaml.safe_dump(study_dict()))
    cfg = sample(spec, optuna.trial.FixedTrial({}))
    data = prepare_data(spec)
    full = TrialRun(cfg.model_copy(update={"method": "full"}), data).train()
    assert full.trainable_params["final"] == full.trainable_params["model_total"]
    names = list(modeling.adapted_modules(TrialRun(cfg, data).model))
    lora_cfg = cfg.model_copy(update={"method": "lora", "lora": LoraKnobs(
        rank_pattern={n: 3 for n in names}, alpha_pattern={n: 6.0 for n in names})})
    run = TrialRun(lora_cfg, data)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora_B" in n}
    lora = run.train()
    ranks = {n: m.r["default"] for n, m in run.model.named_modules() if isinstance(m, LoraLayer)}
    assert set(ranks.values()) == {3} and len(ranks) == len(names)
    assert any(not torch.equal(p, before[n]) for n, p in run.model.named_parameters() if n in before)  # it learned
    assert lora.trainable_params["final"] < full.trainable_params["final"]


def test_regression_reports_pearson_and_spearman(tmp_path) -> None:
    rows = "\n".join(f"sentence number {i} is {'good' if i % 2 else 'bad'},{(i % 5) / 4}" for i in range(60))
    (tmp_path / "r.csv").write_text("text,score\n" + rows + "\n")
    run = make_run(model={"task": "regression"}, study={"objective": {"metric": "pearson"}},
                   data={"source": {"type": "files", "format": "csv", "paths": {"train": str(tmp_path / "r.csv")}},
                         "text_fields": ["text"], "label_field": "score",
                         "split": {"validation": 0.3, "test": 0.0, "seed": 0}})
    result = run.train()
    assert {"pearson", "spearman"} <= set(result.metrics["final"])


def test_batched_allocator_gives_exactly_peft_allocation(monkeypatch) -> None:
    sections = dict(adalora={"target_modules": ["query", "key", "value", "dense"], "init_r": 6, "target_r": 2,
                             "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 1}},
                    training={"max_steps": 16})
    batched = make_run(**sections)
    assert type(batched.model.base_model.rankallocator).__name__ == "BatchedRankAllocator"
    fast = batched.train()
    from adalora_search.train import allocator
    monkeypatch.setattr(allocator, "install", lambda model: None)
    reference = make_run(**sections)
    assert type(reference.model.base_model.rankallocator).__name__ == "RankAllocator"
    slow = reference.train()
    assert fast.rank_allocation == slow.rank_allocation
    assert fast.budget_curve == slow.budget_curve
    fast_pattern = batched.model.peft_config["default"].rank_pattern
    slow_pattern = reference.model.peft_config["default"].rank_pattern
    assert fast_pattern == slow_pattern and list(fast_pattern) == list(slow_pattern)
    assert fast.metrics["final"]["eval_loss"] == slow.metrics["final"]["eval_loss"]
    a = batched.model.base_model.rankallocator
    b = reference.model.base_model.rankallocator
    for name in b.exp_avg_ipt:
        assert torch.equal(a.exp_avg_ipt[name], b.exp_avg_ipt[name])

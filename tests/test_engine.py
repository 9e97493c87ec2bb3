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
    batch = next(
        iter(
            __import__("adalora_search.train.data", fromlist=["batches"]).batches(
                run.data.splits["validation"], 16, run.data.pad_token_id, None
            )
        )
    )
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


def test_nan_loss_fails_the_trial_with_its_reason_and_step() -> None:
    run = make_run(training={"max_steps": 12, "eval_every": 6, "gradient_accumulation": 2})
    original = run.forward_model.forward
    calls = []

    def nan_from_step_3(*args, **kwargs):  # micro-batches 5, 6, ... belong to optimizer steps 3, 3, 4, ...
        out = original(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 5:
            out.loss = out.loss * float("nan")
        return out

    run.forward_model.forward = nan_from_step_3
    with pytest.raises(TrialFailure, match=r"non-finite training loss \(nan\) at step 3;"):
        run.train()
    assert len(calls) == 12  # found at the first check (the evaluation at step 6), not later


def _double_run(orth_reg_weight: float) -> tuple[TrialRun, dict[str, torch.Tensor]]:
    """A float64 AdaLoRA run with P and Q moved away from orthogonality, and one batch."""
    from adalora_search.train.data import batches

    run = make_run(
        adalora={
            "orth_reg_weight": orth_reg_weight,
            "init_r": 6,
            "target_r": 2,
            "target_modules": ["query", "key", "value", "dense"],
        }
    )
    run.model.double()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in run.model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.3)
    run.model.eval()  # no dropout: both losses see the same network
    return run, next(iter(batches(run.data.splits["train"], 8, run.data.pad_token_id, None)))


def test_batched_orthogonal_regularizer_equals_peft_value() -> None:
    run, batch = _double_run(orth_reg_weight=0.7)
    with torch.no_grad():
        peft_loss = run.model(**batch).loss  # PEFT's AdaLoraModel.forward adds 0.7 * R itself
        plain = run.forward_model(**batch).loss  # the transformers model under it: no regularizer
        ours = run.regularizer.loss()
    peft_term = float(peft_loss - plain)
    assert peft_term > 0.1  # the matrices are far from orthogonal: the term is not trivially 0
    assert float(ours) == pytest.approx(peft_term, rel=1e-6)
    assert run.regularizer.count == 2 * len(modeling.adapted_modules(run.model))  # every P and Q, once
    assert len(run.regularizer.groups) < run.regularizer.count  # stacked by shape


def test_training_loss_is_peft_loss_counted_once_with_equal_gradients() -> None:
    run, batch = _double_run(orth_reg_weight=0.7)
    run._losses = []
    trained = [p for p in run.model.parameters() if p.requires_grad]
    ours, _ = run._forward_backward(batch)
    ours_grads = [p.grad.clone() for p in trained]
    run.model.zero_grad(set_to_none=True)
    peft_loss = run.model(**batch).loss
    peft_loss.backward()
    assert float(ours) == pytest.approx(float(peft_loss.detach()), rel=1e-9)
    for mine, theirs in zip(ours_grads, (p.grad for p in trained)):
        torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-10)


def test_zero_orth_reg_weight_adds_nothing() -> None:
    run, batch = _double_run(orth_reg_weight=0.0)
    with torch.no_grad():
        assert float(run.model(**batch).loss) == pytest.approx(float(run.forward_model(**batch).loss), rel=1e-12)
    assert float(run.regularizer.loss()) == 0.0


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
    lora_cfg = cfg.model_copy(
        update={
            "method": "lora",
            "lora": LoraKnobs(rank_pattern={n: 3 for n in names}, alpha_pattern={n: 6.0 for n in names}),
        }
    )
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
    run = make_run(
        model={"task": "regression"},
        study={"objective": {"metric": "pearson"}},
        data={
            "source": {"type": "files", "format": "csv", "paths": {"train": str(tmp_path / "r.csv")}},
            "text_fields": ["text"],
            "label_field": "score",
            "split": {"validation": 0.3, "test": 0.0, "seed": 0},
        },
    )
    result = run.train()
    assert {"pearson", "spearman"} <= set(result.metrics["final"])


def test_batched_allocator_gives_exactly_peft_allocation(monkeypatch) -> None:
    sections = dict(
        adalora={
            "target_modules": ["query", "key", "value", "dense"],
            "init_r": 6,
            "target_r": 2,
            "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 1},
        },
        training={"max_steps": 16},
    )
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


def test_memory_options_platform_checks_and_load_arguments(monkeypatch) -> None:
    from adalora_search.train import memory

    spec = parse_spec(yaml.safe_dump(study_dict(model={"quantization": "4bit", "init": "pretrained"})))
    on_cpu = memory.platform_problems(spec, cuda=False)
    assert [p.field for p in on_cpu] == ["model.quantization"] and "needs a CUDA GPU" in on_cpu[0].message
    spec = parse_spec(
        yaml.safe_dump(study_dict(model={"quantization": "8bit", "init": "pretrained"}, training={"device": "cpu"}))
    )
    assert "needs a CUDA GPU" in memory.platform_problems(spec, cuda=True)[0].message  # CUDA there, not chosen
    spec = parse_spec(
        yaml.safe_dump(study_dict(model={"quantization": "4bit"}, study={"references": [{"kind": "full"}]}))
    )
    fields = {p.field: p.message for p in memory.platform_problems(spec, cuda=True)}
    assert "model.init: random" in fields["model.quantization"] or "bitsandbytes" in fields["model.quantization"]
    assert "full fine-tuning cannot train quantized weights" in fields["study.references"]
    kwargs = memory.load_kwargs(parse_spec(yaml.safe_dump(study_dict(model={"attn_implementation": "eager"}))).model)
    assert kwargs == {"attn_implementation": "eager"}
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    kwargs = memory.load_kwargs(parse_spec(yaml.safe_dump(study_dict(model={"quantization": "4bit"}))).model)
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["device_map"] == {"": 0}


def test_attn_implementation_reaches_the_model() -> None:
    run = make_run(model={"attn_implementation": "eager"})
    assert run.model.base_model.model.config._attn_implementation == "eager"


def test_checkpoint_weights_load_in_the_spec_dtype_not_the_stored_one(tmp_path) -> None:
    """transformers 5 keeps a bf16 checkpoint in bf16 unless told: model.dtype auto means fp32 weights."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(
        "bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    AutoModelForSequenceClassification.from_config(config).to(torch.bfloat16).save_pretrained(tmp_path)
    for dtype, expected in (("auto", torch.float32), ("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        spec = parse_spec(
            yaml.safe_dump(
                study_dict(
                    model={"name_or_path": str(tmp_path), "init": "pretrained", "config_overrides": {}, "dtype": dtype}
                )
            )
        )
        model = modeling.build_base(spec.model, ["a", "b"], 0)
        assert {p.dtype for p in model.parameters()} == {expected}, dtype

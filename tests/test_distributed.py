"""One trial on two processes (torch.distributed, gloo on the CPU) equals the same trial on one."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import optuna
import pytest
import torch
import yaml
from conftest import run_cli, study_dict, write_study

from adalora_search.errors import TrialFailure, UserError
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import parse_spec
from adalora_search.study.space import sample
from adalora_search.train import distributed
from adalora_search.train.distributed import RankFailure, Ranks
from adalora_search.train.engine import TrialRun

pytestmark = pytest.mark.slow

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # masks differ from one process's


def _study(**training: object) -> dict:
    base = study_dict()
    return study_dict(
        model={**base["model"], "config_overrides": {**base["model"]["config_overrides"], **NO_DROPOUT}},
        data={"max_train_samples": 60},  # 60 rows: each epoch ends on a batch of 4, two rows per rank
        training={"max_steps": 10, "batch_size": 8, "gradient_accumulation": 2, "eval_every": 5, **training},
        adalora={"lora_dropout": 0.0, "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 1}},
    )


def _trial(spec, ranks: Ranks | None = None, on_eval=None) -> TrialRun:
    run = TrialRun(sample(spec, optuna.trial.FixedTrial({})), prepare_data(spec), ranks)
    run.train(on_eval)
    return run


def test_two_processes_train_the_trial_one_process_trains(capfd: pytest.CaptureFixture) -> None:
    spec = parse_spec(yaml.safe_dump(_study()))
    alone = _trial(spec)
    with distributed.group(sample(spec, optuna.trial.FixedTrial({})), 2, cuda=False) as ranks:
        pair = _trial(spec, ranks)
    assert mp.active_children() == []  # the other rank has exited: nothing outlives the trial
    assert pair.result.rank_allocation == alone.result.rank_allocation
    assert pair.result.budget_curve == alone.result.budget_curve
    for one, two in zip(alone.result.history, pair.result.history, strict=True):
        assert two["step"] == one["step"] and two["budget"] == one["budget"]
        assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-4, abs=1e-5)
        assert two["accuracy"] == pytest.approx(one["accuracy"], abs=1e-9)
    shared = pair.result.timing["distributed"]
    assert shared["world_size"] == 2 and shared["backend"] == "gloo"
    assert shared["allocations_checked"] == len(alone.result.budget_curve) - 1  # every rank pruning compared
    assert "waitForInput" not in capfd.readouterr().err  # #35 item 6: no c10d line per second while rank 1 starts


def test_ranks_that_allocate_differently_fail_the_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    ranks = Ranks(0, 2, "gloo")
    ranks.record({"layer.0.query": 3})

    def gathered(out: list, value: object) -> None:
        out[:] = [value, ("another digest", 1)]

    monkeypatch.setattr(torch.distributed, "all_gather_object", gathered)
    with pytest.raises(TrialFailure, match="rank allocations differ"):
        ranks.check_same()


def test_a_rank_that_dies_fails_the_trial_with_its_reason_and_no_process_is_left() -> None:
    spec = parse_spec(yaml.safe_dump(_study()))

    def kill_the_other_rank(step: int, scores: dict) -> None:
        for child in mp.active_children():
            os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(RankFailure, match=r"rank 1 died \(exit code -9\)"):
        with distributed.group(sample(spec, optuna.trial.FixedTrial({})), 2, cuda=False) as ranks:
            _trial(spec, ranks, kill_the_other_rank)
    assert mp.active_children() == []


def test_run_with_two_processes_per_trial_stores_the_study_one_process_stores(tmp_path, monkeypatch, capsys) -> None:
    data = _study()
    data["study"] = {**data["study"], "n_trials": 2}
    one = write_study(tmp_path, data, "one.yaml")
    two = write_study(tmp_path, data, "two.yaml")
    assert run_cli(["run", str(one)], monkeypatch, capsys)[0] == 0
    code, out = run_cli(["run", str(two), "--gpus-per-trial", "2"], monkeypatch, capsys)
    assert code == 0, out
    studies = [
        optuna.load_study(study_name=data["study"]["name"], storage=f"sqlite:///{tmp_path / n}.db")
        for n in ("one", "two")
    ]
    trials = [s.get_trials() for s in studies]
    assert [t.state for t in trials[0]] == [t.state for t in trials[1]]
    assert [set(t.user_attrs) for t in trials[0]] == [set(t.user_attrs) for t in trials[1]]
    assert set(studies[0].user_attrs) == set(studies[1].user_attrs)
    for a, b in zip(*trials):
        assert a.params == b.params and a.user_attrs["rank_allocation"] == b.user_attrs["rank_allocation"]
        assert b.values[0] == pytest.approx(a.values[0], abs=1e-9)
        assert b.user_attrs["timing"]["distributed"]["world_size"] == 2


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--gpus-per-trial", "3"], "make batch_size a multiple of 3"),
        (["--gpus-per-trial", "2", "--workers-per-gpu", "2"], "drop --workers-per-gpu"),
        (["--fsdp"], "--fsdp: not offered"),
    ],
)
def test_bad_process_options_exit_2(tmp_path, monkeypatch, capsys, args: list[str], expect: str) -> None:
    code, out = run_cli(["run", str(write_study(tmp_path, _study())), *args], monkeypatch, capsys)
    assert code == 2 and expect in out and "Traceback" not in out


class _Queue:
    def __init__(self, item: object = None) -> None:
        self.item = item

    def get(self, timeout: float) -> object:
        if self.item is None:
            raise TimeoutError
        return self.item


def test_a_rank_that_fails_fails_the_trial_as_one_process_would_and_only_a_death_is_retried() -> None:
    """A follower's non-finite loss or input error would repeat: not re-queued like a lost process."""

    err = RuntimeError("Connection closed by peer")
    assert (
        type(Ranks(0, 2, "gloo", failures=_Queue(("trial", "rank 1: non-finite loss")))._failure(err)) is TrialFailure
    )
    assert type(Ranks(0, 2, "gloo", failures=_Queue(("user", "rank 1: data")))._failure(err)) is UserError
    death = Ranks(0, 2, "gloo", failures=_Queue())._failure(err)
    assert type(death) is RankFailure and "Connection closed" in str(death)


def test_loss_terms_follow_each_tasks_mean() -> None:
    from adalora_search.tasks import get_task

    batch = {"input_ids": torch.zeros(2, 3), "labels": torch.tensor([[5, 6, -100], [-100, 7, 8]])}
    assert get_task("causal_lm").loss_terms(batch) == 3  # shifted: a row's first label predicts nothing
    assert get_task("token_classification").loss_terms(batch) == 4
    assert get_task("seq2seq").loss_terms(batch) == 4  # target tokens: the decoder's inputs are shifted, not labels
    rows = {"input_ids": torch.zeros(3, 4), "labels": torch.tensor([1, 0, 1])}
    assert get_task("classification").loss_terms(rows) == 3
    windows = {"input_ids": torch.zeros(3, 4), "start_positions": torch.tensor([1, 0, 2])}
    assert get_task("question_answering").loss_terms(windows) == 3


def test_reduced_gradients_keep_dtype_and_absent_gradients() -> None:
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        full, half, unused = (
            torch.nn.Parameter(torch.ones(3, dtype=d)) for d in (torch.float32, torch.bfloat16, torch.float32)
        )
        full.grad, half.grad = torch.full((3,), 0.5), torch.full((3,), 0.25, dtype=torch.bfloat16)
        Ranks(0, 1, "gloo").reduce_gradients([full, half, unused])
        assert full.grad.tolist() == [0.5] * 3 and half.grad.dtype == torch.bfloat16 and unused.grad is None
    finally:
        torch.distributed.destroy_process_group()


def test_gpu_slots_follow_the_gpus_this_process_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from adalora_search.search.workers import worker_slots

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # e.g. what a cluster allocated
    assert worker_slots(1, [], 1, 2) == ["4,5", "6,7"]
    assert worker_slots(1, ["0", "1", "2"], 1, 3) == ["0,1,2"]
    with pytest.raises(UserError, match="does not split"):
        worker_slots(1, ["0", "1", "2"], 1, 2)


def test_a_compiled_trial_on_several_processes_is_refused(tmp_path, monkeypatch, capsys) -> None:
    study = write_study(tmp_path, _study(compile=True))
    code, out = run_cli(["run", str(study), "--gpus-per-trial", "2"], monkeypatch, capsys)
    assert code == 2 and "set compile: false or --gpus-per-trial 1" in out


@pytest.mark.parametrize("task", ["seq2seq", "question_answering"])
def test_text_to_text_and_question_answering_trials_on_two_processes_equal_one(task: str) -> None:
    """Targets of their own width (seq2seq) and start/end positions (QA) are sharded and weighted as one
    process averages them: the same allocation and evaluation.
    """
    from test_question_answering import qa_study
    from test_seq2seq import seq2seq_study

    schedule = {"lora_dropout": 0.0, "schedule": {"unit": "steps", "t_init": 2, "t_final": 3, "delta_t": 1}}
    training = {"max_steps": 8, "batch_size": 8, "gradient_accumulation": 1, "eval_every": 4}
    if task == "seq2seq":
        data = seq2seq_study(
            model={"config_overrides": {"dropout": 0.0}}, training=training, data={"max_train_samples": 60}
        )
    else:
        base = qa_study()["model"]
        overrides = {**base["config_overrides"], **NO_DROPOUT}
        data = qa_study(model={"config_overrides": overrides}, training=training, data={"max_train_samples": 40})
    data["adalora"] = {**data["adalora"], **schedule}
    spec = parse_spec(yaml.safe_dump(data))
    alone = _trial(spec)
    with distributed.group(sample(spec, optuna.trial.FixedTrial({})), 2, cuda=False) as ranks:
        pair = _trial(spec, ranks)
    assert pair.result.rank_allocation == alone.result.rank_allocation
    for one, two in zip(alone.result.history, pair.result.history, strict=True):
        assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-4, abs=1e-5)

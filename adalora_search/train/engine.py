"""One training run (AdaLoRA, LoRA or full fine-tuning) that reports while it trains.

Reads top to bottom: build -> train (``update_and_allocate`` once per optimizer step, after
``optimizer.step()`` and before ``zero_grad()``) -> evaluate every N steps -> ``on_eval``.
The engine never imports Optuna: the caller decides what an evaluation means (trial pruning).
``TrialRun.result`` always holds what is known so far, so a pruned or failed run keeps it.
"""

from __future__ import annotations

import os
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import get_scheduler

from adalora_search.errors import TrialFailure
from adalora_search.study.space import TrialConfig, optimizer_steps
from adalora_search.tasks import EvalContext, get_task
from adalora_search.tasks.batching import Generation
from adalora_search.train import compiling, memory, methods, modeling
from adalora_search.train.allocator import RankBook
from adalora_search.train.data import TokenizedData, batches
from adalora_search.train.distributed import Ranks, Stopped
from adalora_search.train.regularizer import OrthogonalRegularizer

OnEval = Callable[[int, dict[str, float]], None]
FINITE_CHECK_EVERY = 32  # optimizer steps between non-finite loss checks (each one host sync)

THREADS_AT_IMPORT = torch.get_num_threads()  # what a verb restores after trials set training.num_threads


@dataclass
class RunResult:
    """Everything a finished (or stopped) run leaves behind; JSON-serialisable via ``asdict``."""

    metrics: dict[str, Any] = field(default_factory=dict)  # {"final": {...}, "best": {...}, "test": {...}}
    history: list[dict[str, float]] = field(default_factory=list)
    rank_allocation: dict[str, int] = field(default_factory=dict)
    budget_curve: list[list[int]] = field(default_factory=list)
    trainable_params: dict[str, int] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    final_allocation_done: bool = False

    def as_attrs(self) -> dict[str, Any]:
        """The result as plain JSON-able dicts and lists (Optuna user attrs)."""
        return asdict(self)


class TrialRun:
    """Build once, then ``train()``; ``result`` is filled in as the run goes."""

    def __init__(self, cfg: TrialConfig, data: TokenizedData, parallel: Ranks | None = None, data_seconds: float = 0.0):
        self.cfg = cfg
        self.data = data
        self.task = get_task(cfg.model.task)
        self.parallel = parallel  # this process's rank when the trial runs on several (train/distributed.py)
        self.device = _device(cfg.training.device)
        self.device = parallel.device(self.device) if parallel is not None else self.device
        self._weight = 1.0  # this rank's share of the global batch's loss terms (1: one process)
        self.result = RunResult(timing={"data_s": round(data_seconds, 3), "device": str(self.device)})
        threads = cfg.training.num_threads or int(os.environ.get("ADALORA_SEARCH_THREADS", "0"))
        if threads:
            torch.set_num_threads(threads)
        start = time.perf_counter()
        self.total_steps = optimizer_steps(cfg.training, len(data.splits["train"]))
        base = modeling.build_base(cfg.model, data.label_names, cfg.training.seed)
        self.model = methods.wrap(base, cfg, self.total_steps)
        if not memory.placed(cfg.model):  # a quantized or dispatched base is placed by its device_map
            self.model = self.model.to(self.device)
        self.autocast = self.device.type == "cuda" and cfg.model.dtype in ("auto", "bfloat16")
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):  # EVA's forwards
            lora_ranks = methods.initialize(self.model, cfg, self._device_batches)  # EVA: from training batches
        self.result.rank_allocation = lora_ranks  # a LoRA reference's ranks (AdaLoRA's are set by RankBook)
        adalora = methods.METHODS[cfg.method].rank_pruning
        self.ranks = RankBook(self.model) if adalora else None
        # AdaLoRA: the transformers model under PEFT's AdaLoraModel, whose forward only adds its own
        # (unbatched) orthogonal regularizer; the batched one of equal value is added in _loss
        self.regularizer = OrthogonalRegularizer(self.model) if adalora else None
        self.forward_model = self.model.base_model.model if adalora else self.model
        settings = compiling.options(cfg.training.compile)
        self.compiled = compiling.CompiledLoss(self._loss, settings) if settings is not None else None
        self._record_params(initial=True)
        self.result.timing["build_s"] = round(time.perf_counter() - start, 3)

    # ------------------------------------------------------------------ train
    def train(self, on_eval: OnEval | None = None) -> RunResult:
        """Train for ``total_steps`` optimizer steps, evaluating every ``eval_every`` steps.

        ``on_eval(step, scores)`` is called after each evaluation (scores: the task's metrics,
        ``train_loss`` and the current ``budget``, total rank); it may raise to stop the run
        (trial pruning), and ``result`` then keeps what was known.

        Raises:
            TrialFailure: a non-finite training loss, or CUDA out of memory.
        """
        t = self.cfg.training
        optimizer, scheduler = self._optimizer()
        step, micro, tokens, start, eval_s = 0, 0, 0, time.perf_counter(), 0.0
        self._losses: list[torch.Tensor] = []  # detached, checked for non-finite values without a sync per step
        self.model.train()
        try:
            for batch in self._train_batches():
                loss, restarted = self._forward_backward(batch)
                if restarted:  # compilation failed: this optimizer step's gradients start again, eager
                    micro -= micro % t.gradient_accumulation
                tokens += int(batch["attention_mask"].sum()) if batch is not None else 0
                micro += 1
                if micro % t.gradient_accumulation:
                    continue  # accumulate: one optimizer step (and one allocation) per N micro-batches
                if self.parallel is not None:  # the global batch's gradient, on every rank
                    self.parallel.reduce_gradients(optimizer.param_groups[0]["params"])
                if t.max_grad_norm:  # over the trained tensors only: walking every frozen one costs ms per step
                    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                self._allocate(step)  # after optimizer.step(), before zero_grad()
                optimizer.zero_grad(set_to_none=True)
                evaluate = step % t.eval_every == 0 or step == self.total_steps
                if evaluate or step % FINITE_CHECK_EVERY == 0:
                    self._check_finite(step)
                if evaluate:
                    eval_s += self._evaluate_and_report(step, float(loss), on_eval)
                    self.model.train()
                if step >= self.total_steps:
                    break
            self._check_finite(step)
            self._finalize_allocation(step)
            if self.parallel is not None:
                self.parallel.check_same()
            if self.parallel is None or self.parallel.rank == 0:
                eval_s += self._final_generation()
        except torch.cuda.OutOfMemoryError as exc:
            self.model = None  # type: ignore[assignment]
            torch.cuda.empty_cache()
            raise TrialFailure(f"CUDA out of memory at step {step}: {str(exc).splitlines()[0]}") from None
        finally:
            self._record_timing(step, tokens, time.perf_counter() - start, eval_s)
        return self.result

    def _train_batches(self):
        t = self.cfg.training
        epoch = 0
        while True:  # epochs until total_steps; reshuffled (seeded) every epoch
            for batch in batches(
                self.data.splits["train"],
                t.batch_size,
                self.data.pad_token_id,
                shuffle_seed=t.seed * 1000 + epoch,
                **self._padding(),
                collate=self.task.collate,
            ):
                if self.parallel is None:
                    yield batch
                else:  # this rank's rows of the global batch (None: it has none), its loss weighted by their share
                    shard, self._weight = self.parallel.shard(batch, self.task.loss_terms)
                    yield shard
            epoch += 1

    def _device_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Training batches (the first epoch's order) on the model's device."""
        for batch in self._train_batches():
            if batch is not None:
                yield {k: v.to(self.device) for k, v in batch.items()}

    def _padding(self) -> dict[str, int | None]:
        """Training batches' widths (evaluation is eager: its batches are not padded further)."""
        return {"pad_to_multiple_of": self.cfg.data.pad_to_multiple_of, "max_width": self.cfg.data.max_length}

    def _forward_backward(self, batch: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, bool]:
        """One micro-batch's forward and backward: the detached loss, left on the device (no sync), and
        whether the step started again eagerly after a failed compilation (its gradients were cleared).
        A rank without rows in this global batch (None) adds nothing.
        """
        if batch is None:
            return torch.zeros((), device=self.device), False
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        restarted = False
        if self.compiled is not None:
            loss = self.compiled.step(batch, self._backward)
            if loss is not None:
                return loss, False
            self.model.zero_grad(set_to_none=True)  # a failed compiled step may have left partial gradients
            restarted = True
        return self._backward(self._loss(batch)), restarted

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: the task loss plus AdaLoRA's orthogonal regularizer (what is compiled)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.forward_model(**batch).loss  # labels given: the task loss
        if self.regularizer is not None:
            loss = loss + self.regularizer.loss()  # AdaLoRA's orthogonal regularizer, in float32
        return loss

    def _backward(self, loss: torch.Tensor) -> torch.Tensor:
        (loss * self._weight / self.cfg.training.gradient_accumulation).backward()
        loss = loss.detach()
        self._losses.append(loss)
        return loss

    def _check_finite(self, step: int) -> None:
        """Raise if a training loss since the last check was not finite (one host sync per check).

        Raises:
            TrialFailure: naming the first optimizer step whose loss was NaN or infinite.
        """
        if not self._losses:
            return
        losses, self._losses = torch.stack(self._losses), []
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            micro = self.cfg.training.gradient_accumulation
            at = step - (len(losses) - 1 - first) // micro
            raise TrialFailure(
                f"non-finite training loss ({float(losses[first])}) at step {at}; "
                "lower the learning rate or check the data"
            )

    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        t = self.cfg.training
        params = [p for p in self.model.parameters() if p.requires_grad]
        fused = self.device.type in ("cuda", "cpu")  # one fused kernel over all tensors (CPU too, torch >= 2.4)
        optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)
        warmup = int(t.warmup_ratio * self.total_steps)
        scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=self.total_steps)
        return optimizer, scheduler

    # ------------------------------------------------------------------ AdaLoRA
    def _allocate(self, step: int) -> None:
        if self.ranks is not None and self.ranks.step(step):
            self._sync_ranks()

    def _finalize_allocation(self, step: int) -> None:
        if self.ranks is not None and self.ranks.finish(step):
            self._sync_ranks()

    def _sync_ranks(self) -> None:
        """The allocation so far into the result (a trial-pruned run keeps it), and the trainable parameters
        after the rank pruning so far (``final``: a stopped run's count where it stopped).
        """
        assert self.ranks is not None
        self._copy_ranks()
        self._record_params()
        if self.parallel is not None:
            self.parallel.record(self.ranks.allocation)
        if self.ranks.final:
            self.result.final_allocation_done = True

    def _copy_ranks(self) -> None:
        assert self.ranks is not None
        self.result.rank_allocation = dict(self.ranks.allocation)
        self.result.budget_curve = [list(p) for p in self.ranks.budget_curve]

    def _record_params(self, initial: bool = False) -> None:
        """Trainable parameters (AdaLoRA: the kept triplets and the head) and the model's total."""
        key = "initial" if initial else "final"
        if self.ranks is not None:
            if initial:  # walked once: rank pruning may record this at every step
                self._copy_ranks()
                self._triplets, self._head = modeling.triplet_params(self.model), modeling.head_params(self.model)
            count = sum(r * self._triplets[n] for n, r in self.ranks.allocation.items()) + self._head
        else:
            count = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.result.trainable_params[key] = count
        self.result.trainable_params.setdefault("model_total", sum(p.numel() for p in self.model.parameters()))
        if initial:
            self.result.trainable_params["final"] = count

    # ------------------------------------------------------------------ evaluate
    def _evaluate_and_report(self, step: int, loss: float, on_eval: OnEval | None) -> float:
        """Evaluate on validation and call ``on_eval``; seconds spent. On several processes rank 0 does it and
        then tells the others whether training stops (``Stopped`` is raised on them).
        """
        if self.parallel is None:
            return self._evaluate_here(step, loss, on_eval)
        if self.parallel.rank > 0:
            if self.parallel.stop():
                raise Stopped(step)
            return 0.0
        try:
            seconds = self._evaluate_here(step, loss, on_eval)
        except BaseException:
            self.parallel.stop(True)
            raise
        self.parallel.stop(False)
        return seconds

    def _evaluate_here(self, step: int, loss: float, on_eval: OnEval | None) -> float:
        start = time.perf_counter()
        scores = self.evaluate("validation")
        scores["train_loss"] = loss
        scores["budget"] = self.result.budget_curve[-1][1] if self.result.budget_curve else 0
        self.result.history.append({"step": step, **scores})
        final = {k: v for k, v in scores.items() if k != "budget"}
        self.result.metrics["final"] = {**final, "step": step}
        self._update_best(final, step)
        elapsed = time.perf_counter() - start
        if on_eval is not None:
            on_eval(step, scores)
        return elapsed

    def _update_best(self, scores: dict[str, float], step: int) -> None:
        main = self.task.main_metric
        best = self.result.metrics.get("best")
        if best is None or self.task.is_better(main, scores[main], best[main]):
            self.result.metrics["best"] = {**scores, "step": step}

    def _final_generation(self) -> float:
        """Generation metrics on validation after training, when not computed at evaluations; seconds spent."""
        generation = self.cfg.training.generation
        final = self.result.metrics.get("final")
        if final is None or generation.at_evals:
            return 0.0
        start = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            scores = self.task.generation_scores(self._context("validation", final=True))
        if scores:
            final.update(scores)
            self.result.history[-1].update(scores)
        return time.perf_counter() - start

    def evaluate(self, split: str, final: bool = False) -> dict[str, float]:
        """The task's metrics and plain loss (no orthogonal regularizer) on a split.

        ``final``: the evaluation after training (causal_lm generation metrics always run then).
        """
        self.model.eval()
        with torch.no_grad():
            return self.task.evaluate(self._context(split, final))

    def _context(self, split: str, final: bool) -> EvalContext:
        data = self.data.splits[split]
        return EvalContext(
            forward=self._logits,
            split=data,
            label_names=self.data.label_names,
            tokenizer=self.data.tokenizer,
            batches=lambda: batches(
                data, self.cfg.training.eval_batch_size, self.data.pad_token_id, None, collate=self.task.collate
            ),
            generate=self._generate,
            generation=self.cfg.training.generation,
            final=final,
            data=self.cfg.data,
        )

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.task.logits(self.forward_model(**batch))

    def _generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Generations [n_new] for prompt ids, as the task generates (``Task.generate``)."""
        generation = self.cfg.training.generation
        how = Generation(
            pad_id=self.data.pad_token_id,
            eos_id=getattr(self.data.tokenizer, "eos_token_id", None),
            batch_size=self.cfg.training.eval_batch_size,
            device=self.device,
            autocast=self.autocast,
            num_beams=generation.num_beams,
            length_penalty=generation.length_penalty,
        )
        return self.task.generate(self.model, prompts, max_new_tokens, how)

    def _record_timing(self, steps: int, tokens: int, seconds: float, eval_s: float) -> None:
        t = self.result.timing
        t.update(
            steps=steps,
            train_s=round(seconds - eval_s, 3),
            eval_s=round(eval_s, 3),
            train_tokens_per_s=round(tokens / max(seconds - eval_s, 1e-9), 1),
        )
        if self.compiled is not None:
            t["compile"] = self.compiled.finish()
        if self.parallel is not None:
            t["distributed"] = {
                "world_size": self.parallel.world,
                "backend": self.parallel.backend,
                "allocations_checked": self.parallel.checked,
            }
        if self.device.type == "cuda":
            t["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        else:
            t["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    def save_adapter(self, directory: str) -> None:
        """PEFT's ``save_pretrained`` of the trained adapter (and head).

        Modules pruned to rank 0 save zero-sized tensors, which PEFT takes for unsharded DeepSpeed or
        FSDP weights and warns about; here that is expected (the adapter reloads exactly), so not shown.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LoRA tensor\\(s\\) have invalid shape")
            self.model.save_pretrained(directory)


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")

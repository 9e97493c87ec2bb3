"""One trial on several processes: data parallelism with ``torch.distributed`` (NCCL on CUDA, gloo on CPU).

The worker that claimed the trial is rank 0: it talks to Optuna, evaluates, reports and saves; ``group``
starts ranks 1..N-1 as processes that train the same configuration on their share of every batch.
Every rank draws the same global batches (the study's ``batch_size`` x ``gradient_accumulation``,
as one process would) and trains rows ``rank::N`` of each; before each optimizer step the gradients
are summed over the ranks (``all_reduce``), each rank's loss having been weighted by its share of the
global batch's loss terms, so the step equals the one-process step (DDP's algorithm, done by hand so
that the rounding-free weighting also holds for the last, smaller batch of an epoch). AdaLoRA's
``update_and_allocate`` then sees the same gradients on every rank and prunes the same ranks; each
rank keeps a digest of every allocation, compared at the end (``check_same``): a difference fails the
trial. At each evaluation rank 0 broadcasts whether training stops (trial pruning, an error), so all
ranks stop together. A rank that fails (a non-finite loss, an input error) fails the trial with its
error, as one process would; a rank that dies fails it with ``RankFailure`` (re-queued like a lost
worker's trial); the others are torn down, and a follower whose rank 0 is gone exits: no process
outlives the trial. On CUDA the gradients go over NCCL and the small messages over gloo; a dead
rank is noticed at once by gloo, and by NCCL only at the collective timeout (``COLLECTIVE``).
Every rank seeds as one process does, so dropout draws the same masks on each rank's own rows:
with dropout, N processes train a different sample of the same run than one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from adalora_search.errors import TrialFailure, UserError
from adalora_search.study.space import TrialConfig

_log = logging.getLogger(__name__)
JOIN_S = 30  # seconds a finished follower gets to exit before it is killed
COLLECTIVE = timedelta(minutes=30)  # the longest rank 0 may evaluate while the others wait (torch's default)


class RankFailure(TrialFailure):
    """A rank other than 0 died or failed: the trial fails with its reason and is retried like a lost worker's."""


class Stopped(Exception):
    """Raised on ranks 1..N-1 when rank 0 says training stops (trial pruning, or rank 0 failed)."""


@dataclass
class Ranks:
    """This process's place in a trial's process group (``rank`` of ``world``) and what it checks."""

    rank: int
    world: int
    backend: str  # "nccl" or "gloo"
    digest: str = ""  # running hash of every rank allocation this rank applied
    checked: int = 0  # allocations folded into the digest
    failures: Any = field(default=None, repr=False)  # rank 0: the queue followers put their failure on
    followers: list[Any] = field(default_factory=list, repr=False)  # rank 0: the processes of ranks 1..N-1

    def device(self, device: torch.device) -> torch.device:
        """Rank r trains on the r-th visible GPU (its worker's slot), or on the CPU."""
        return torch.device("cuda", self.rank) if device.type == "cuda" else device

    def shard(
        self, batch: dict[str, torch.Tensor], terms: Callable[[dict[str, torch.Tensor]], int]
    ) -> tuple[dict[str, torch.Tensor] | None, float]:
        """This rank's rows of a global batch (``rank::world``) and its share of the batch's loss terms
        (``terms``: the task's ``loss_terms``), by which its mean loss is weighted; None when its rows hold
        no loss term (no rows left at the end of an epoch, or only masked labels).
        """
        mine = {k: v[self.rank :: self.world].contiguous() for k, v in batch.items()}  # models .view() labels
        share = terms(mine) if mine["input_ids"].shape[0] else 0
        return (mine, share / max(terms(batch), 1)) if share else (None, 0.0)

    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the weighted gradients over the ranks (one flat ``all_reduce``, in float32).

        A rank without rows adds zeros; a parameter no rank has a gradient for keeps none (as one process).
        """
        device = params[0].device
        grads = [p.grad.float() if p.grad is not None else torch.zeros(p.shape, device=device) for p in params]
        present = torch.tensor([float(p.grad is not None) for p in params], device=device)
        flat = torch.cat([*(g.reshape(-1) for g in grads), present])
        self._collective(dist.all_reduce, flat)
        offset = 0
        for i, (p, g) in enumerate(zip(params, grads)):
            summed = flat[offset : offset + g.numel()].view(p.shape)
            p.grad = summed.to(p.dtype) if flat[-len(params) + i] > 0 else None
            offset += g.numel()

    def record(self, allocation: dict[str, int]) -> None:
        """Fold a rank allocation (module -> rank) into this rank's digest."""
        text = self.digest + json.dumps(allocation, sort_keys=True)
        self.digest = hashlib.sha256(text.encode()).hexdigest()
        self.checked += 1

    def stop(self, stop: bool = False) -> bool:
        """Rank 0 says whether training stops here; every rank returns rank 0's answer."""
        flag = torch.tensor([int(stop)])
        self._collective(dist.broadcast, flag, src=0)
        return bool(flag.item())

    def check_same(self) -> None:
        """Raise on rank 0 when the ranks applied different rank allocations (they must be identical).

        Raises:
            TrialFailure: naming each rank's number of allocations.
        """
        seen: list[Any] = [None] * self.world
        self._collective(dist.all_gather_object, seen, (self.digest, self.checked))
        if len(set(seen)) > 1:
            raise TrialFailure(
                f"the ranks' AdaLoRA rank allocations differ (digest, allocations per rank: {seen}); "
                "the trial's result would depend on the rank: a bug, please report it"
            )

    def _collective(self, op: Any, *args: Any, **kwargs: Any) -> None:
        try:
            op(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as exc:  # a peer failed or died: its reason, not gloo's words
            raise self._failure(exc) from None

    def _failure(self, exc: BaseException) -> Exception:
        """What another rank's failure means here: its own error when it said one (a non-finite loss, an input
        error: it would repeat, so the trial fails as one process's would), else ``RankFailure`` (it died).
        """
        if self.failures is not None:
            try:
                kind, message = self.failures.get(timeout=5)
                return {"user": UserError, "trial": TrialFailure}.get(kind, TrialFailure)(message)
            except Exception:  # noqa: BLE001 - queue.Empty, or a closed queue: the follower died silently
                pass
        for proc in self.followers:
            proc.join(5)
        dead = [f"rank {r} died (exit code {p.exitcode})" for r, p in enumerate(self.followers, 1) if not p.is_alive()]
        reason = "; ".join(dead) or f"a rank of the trial's {self.world} processes failed ({type(exc).__name__}: {exc})"
        return RankFailure(reason)


def _init(store: dist.Store, rank: int, world: int, cuda: bool) -> None:
    """Join the trial's group: gloo on the CPU; on CUDA NCCL for the gradients and gloo for the small CPU
    messages (the stop flag, the allocation digests), with blocking waits so a timeout raises here.
    """
    if cuda:
        torch.cuda.set_device(rank)
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=COLLECTIVE)


def _await_followers(store: dist.TCPStore, procs: list[Any]) -> None:
    """Wait until every follower has joined the store; a follower that died first fails the trial (no hang).

    Raises:
        RankFailure: naming the follower and its exit code.
    """
    deadline = time.monotonic() + COLLECTIVE.total_seconds()
    for rank, proc in enumerate(procs, start=1):
        while not store.check([f"ready{rank}"]):  # polled: a timed-out store.wait logs a c10d line each time
            if not proc.is_alive():
                raise RankFailure(f"rank {rank} exited with code {proc.exitcode} before training")
            if time.monotonic() > deadline:
                raise RankFailure(f"rank {rank} did not start within {COLLECTIVE}")
            time.sleep(0.2)


@contextmanager
def group(cfg: TrialConfig, world: int, cuda: bool) -> Iterator[Ranks]:
    """Rank 0 of a trial on ``world`` processes: starts ranks 1..world-1 (``follow``), joins the process
    group, and tears everything down when the trial ends (a follower still alive then is killed).
    """
    ctx = mp.get_context("spawn")
    failures = ctx.Queue()
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, timeout=COLLECTIVE, wait_for_workers=False)
    procs = [
        ctx.Process(target=follow, args=(r, world, store.port, cuda, cfg.model_dump_json(), failures), daemon=True)
        for r in range(1, world)
    ]
    for p in procs:
        p.start()
    try:
        _await_followers(store, procs)
        _init(store, 0, world, cuda)
        yield Ranks(0, world, dist.get_backend(), failures=failures, followers=procs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for p in procs:
            p.join(JOIN_S)
            if p.is_alive():
                p.kill()
                p.join()
        failures.close()


def _exit_with(parent: int) -> None:
    """Exit as soon as ``parent`` (rank 0, the worker) is gone, killed or not: no rank outlives its trial."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def follow(rank: int, world: int, port: int, cuda: bool, cfg_json: str, failures: Any) -> None:
    """Rank ``rank`` (> 0) of a trial: train with rank 0 until it says stop; put any failure on ``failures``."""
    from adalora_search.tasks import get_task
    from adalora_search.train.data import load_tokenized
    from adalora_search.train.engine import TrialRun
    from adalora_search.train.modeling import load_tokenizer

    _exit_with(os.getppid())
    try:
        cfg = TrialConfig.model_validate_json(cfg_json)
        data = load_tokenized(cfg.data, load_tokenizer(cfg.model), get_task(cfg.model.task))
        store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=COLLECTIVE)
        store.set(f"ready{rank}", "1")
        _init(store, rank, world, cuda)
        TrialRun(cfg, data, Ranks(rank, world, dist.get_backend())).train()
    except (Stopped, RankFailure):
        pass  # rank 0 stopped the trial, or another rank failed first: their reason is the trial's
    except BaseException as exc:  # noqa: BLE001 - any failure of this rank is the trial's reason
        kind = "user" if isinstance(exc, UserError) else "trial"
        failures.put((kind, f"rank {rank} of {world}: {type(exc).__name__}: {str(exc)[:1000]}"))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

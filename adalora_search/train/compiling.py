"""Compiled trials (``training.compile``): the training loss under ``torch.compile``, eager when it cannot be.

What is compiled is the function from a batch to the training loss — the transformers model under
PEFT (``SVDLinear``'s extra product and division fused into the matmuls' epilogues) and the
orthogonal regularizer — once per trial. Everything that changes parameters in place stays eager:
the optimizer, gradient clipping and ``update_and_allocate``'s rank pruning (masked singular values
are graph inputs, read at every call, so they cause no recompilation; ``tests/test_compile.py``
counts the graphs). Evaluation and generation stay eager too: they would be other graphs (no
gradient, other shapes) compiled for a few calls.

A trial whose compilation fails (no C++ compiler, an operation the compiler does not support, a
graph break under ``fullgraph``, more batch shapes than ``torch._dynamo.config.recompile_limit``) goes
on eager, with a warning naming the reason and the trial's ``timing.compile.fallback``: never a failed
trial. Only compiler errors are caught (``torch._dynamo.exc``): an error of the training itself is
raised as it would be eagerly. The private ``torch._dynamo`` names used here are the package's only ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from adalora_search.study.spec import CompileSpec

_log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def options(setting: bool | CompileSpec) -> CompileSpec | None:
    """``training.compile`` as options: None (eager) for false, the defaults for true."""
    if setting is False:
        return None
    return CompileSpec() if setting is True else setting


class CompiledLoss:
    """``loss_fn`` compiled with ``torch.compile(**options)``; counts the graphs and the seconds they took.

    Args:
        loss_fn: batch -> scalar training loss (a 0-d float tensor on the model's device).
        settings: the trial's ``CompileSpec``.
    """

    def __init__(self, loss_fn: Callable[[Batch], torch.Tensor], settings: CompileSpec):
        torch.compiler.reset()  # a new model per trial: earlier trials' graphs would count towards recompile_limit
        self.eager = loss_fn
        self.settings = settings
        self.compiled = torch.compile(
            loss_fn, mode=settings.mode, dynamic=settings.dynamic, fullgraph=settings.fullgraph
        )
        self.cuda_graphs = settings.cuda_graphs  # on a GPU; a CPU compiles without them
        self.fallback: str | None = None
        self.graphs = 0
        self.seconds = 0.0  # wall time of the micro-steps that compiled a graph (compilation + that step)

    def step(self, batch: Batch, backward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        """``backward(loss(batch))`` through the compiled function; None when it could not compile.

        On None the caller clears the gradients (a failed step may have left some) and runs the step
        eagerly; every later step is eager.

        Raises:
            Exception: any error that is not the compiler's (out of memory, a device-side assert), as eagerly.
        """
        if self.fallback is not None:
            return backward(self.eager(batch))
        from torch._dynamo import config, exc

        before, start = _graph_count(), time.perf_counter()
        try:
            if self.cuda_graphs:  # a new iteration: the previous replay's outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            # past recompile_limit dynamo would run new shapes eager without a word: raise, and say so
            with config.patch(fail_on_recompile_limit_hit=True):
                # cloned: under CUDA graphs the output's memory is reused by the next replay (the engine keeps losses)
                loss = backward(self.compiled(batch).clone())
        except (exc.TorchDynamoException, exc.FailOnRecompileLimitHit) as error:  # the compiler's, not the run's
            self.fallback = _reason(error)
            _log.warning(f"torch.compile failed, this trial goes on eager: {self.fallback}")
            return None
        if (new := _graph_count() - before) > 0:
            self.graphs += new
            self.seconds += time.perf_counter() - start
        return loss

    def finish(self) -> dict[str, object]:
        """What the trial's ``timing.compile`` records (options, graphs compiled and their seconds, or the
        fallback), also said in the log: the number of graphs is bounded by the batch shapes seen.
        """
        if self.fallback is None:
            _log.info(f"compiled: {self.graphs} graph(s) in {self.seconds:.1f} s (mode {self.settings.mode})")
        torch.compiler.reset()  # the trial's graphs (and CUDA graph memory pools) are not kept for later trials
        out: dict[str, object] = {
            "mode": self.settings.mode,
            "graphs": self.graphs,
            "compile_s": round(self.seconds, 3),
        }
        if self.fallback is not None:
            out["fallback"] = self.fallback
        return out


def _graph_count() -> int:
    """Graphs compiled so far in this process (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _reason(exc: Exception, limit: int = 600) -> str:
    """The exception's type and the lines that say what and where (dynamo names the user code of a graph break)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    where = [line for line in lines if line.startswith("File ")][-1:]
    text = "; ".join(lines[:3] + [w for w in where if w not in lines[:3]])
    return f"{type(exc).__name__}: {text}"[:limit]

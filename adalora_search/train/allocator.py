"""A drop-in for PEFT's ``RankAllocator`` that does the same arithmetic with batched tensor ops.

PEFT's allocator walks every model parameter by name on each optimizer step and updates the
sensitivity EMAs tensor by tensor; after the final allocation it rebuilds a mask from Python
lists on every step. Here the adapter tensors are found once, their EMAs live in flat buffers
updated with a few whole-buffer ops in the same order of operations, so the scores, the masks
and the allocation are identical (a test checks this). Scoring, budgeting and masking stay PEFT's own code.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from peft.tuners.adalora import SVDLinear
from peft.tuners.adalora.layer import RankAllocator

ADAPTER = "default"


class BatchedRankAllocator(RankAllocator):
    """Same importance scores and allocation as ``RankAllocator``, fewer kernel launches."""

    def __init__(self, model: torch.nn.Module, peft_config, adapter_name: str):
        super().__init__(model, peft_config, adapter_name)
        self._names: list[str] = []
        self._params: list[torch.nn.Parameter] = []
        self._masks: dict[str, torch.Tensor] = {}
        self._mask_source: dict | None = None
        self._flat: list[torch.Tensor] = []  # ipt, exp_avg_ipt, exp_avg_unc of every adapter tensor, concatenated

    def _collect(self, model: torch.nn.Module) -> None:
        if not self._names:
            for n, p in model.named_parameters():
                if "lora_" in n and self.adapter_name in n:
                    self._names.append(n)
                    self._params.append(p)

    def update_ipt(self, model: torch.nn.Module) -> None:
        """PEFT's sensitivity EMAs, on flat buffers: a few whole-buffer ops instead of ten per matrix.

        ``ipt`` / ``exp_avg_ipt`` / ``exp_avg_unc`` stay dicts of per-parameter tensors (views of
        the buffers), so PEFT's scoring reads them unchanged.
        """
        self._collect(model)
        if not self.ipt:
            self._allocate_buffers()
        with torch.no_grad():
            flat_p, flat_g, ipt = self._flat_p, self._flat_g, self._flat[0]
            torch.cat([p.detach().reshape(-1) for p in self._params], out=flat_p)
            torch.cat([p.grad.reshape(-1) for p in self._params], out=flat_g)
            torch.mul(flat_p, flat_g, out=ipt).abs_()  # |p * grad|
            # in PEFT's order of operations, so every value is bit-identical:
            # exp_ipt = beta1 * exp_ipt + (1 - beta1) * ipt
            exp_ipt, exp_unc = self._flat[1], self._flat[2]
            exp_ipt.mul_(self.beta1).add_(ipt * (1 - self.beta1))
            # exp_unc = beta2 * exp_unc + (1 - beta2) * |ipt - exp_ipt|
            exp_unc.mul_(self.beta2).add_((ipt - exp_ipt).abs_().mul_(1 - self.beta2))

    def _allocate_buffers(self) -> None:
        first = self._params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in self._params):
            raise ValueError("AdaLoRA adapter parameters of mixed dtypes or devices are not supported")
        total = sum(p.numel() for p in self._params)
        self._flat_p, self._flat_g = (torch.empty(total, dtype=first.dtype, device=first.device) for _ in range(2))
        self._flat = [torch.zeros(total, dtype=first.dtype, device=first.device) for _ in range(3)]
        start = 0
        for n, p in zip(self._names, self._params):
            views = [flat[start : start + p.numel()].view(p.shape) for flat in self._flat]
            self.ipt[n], self.exp_avg_ipt[n], self.exp_avg_unc[n] = views
            start += p.numel()

    def mask_to_budget(self, model: torch.nn.Module, budget: int) -> dict[str, list[bool]]:
        """PEFT's triplet scores and threshold, with one device-to-host copy instead of one per module."""
        self._collect(model)
        scores: dict[str, torch.Tensor] = {}
        vectors: dict[str, list[torch.Tensor]] = {}
        for n in self._names:  # named_parameters order, as PEFT iterates
            if f"lora_A.{self.adapter_name}" in n:
                vectors.setdefault(n.replace("lora_A", "%s"), []).append(
                    torch.mean(self._element_score(n), dim=1, keepdim=True)
                )
            elif f"lora_B.{self.adapter_name}" in n:
                vectors.setdefault(n.replace("lora_B", "%s"), []).append(
                    torch.mean(self._element_score(n), dim=0, keepdim=False).view(-1, 1)
                )
            elif f"lora_E.{self.adapter_name}" in n:
                scores[n.replace("lora_E", "%s")] = self._element_score(n)
        names, triplets = [], []
        for name_m, vector in vectors.items():
            names.append(name_m % "lora_E")
            triplets.append(self._combine_ipt(scores[name_m], torch.cat(vector, dim=1)).view(-1))
        flat = torch.cat(triplets)
        threshold = torch.kthvalue(flat, k=self.init_bgt - budget)[0]  # stays on the device: no sync here
        drop = flat <= threshold
        by_name = dict(zip(names, torch.split(drop, [t.numel() for t in triplets])))
        with torch.no_grad():
            for n, p in zip(self._names, self._params):
                if n in by_name:
                    p.masked_fill_(by_name[n].view(-1, 1), 0.0)
        keep = (~drop).tolist()  # the only synchronisation
        pattern, start = {}, 0
        for n, t in zip(names, triplets):
            pattern[n] = keep[start : start + t.numel()]
            start += t.numel()
        return {n: pattern[n] for n in self._names if n in pattern}

    def mask_using_rank_pattern(self, model: torch.nn.Module, rank_pattern: dict) -> None:
        """The final-phase mask, built once as device tensors instead of from lists every step."""
        if rank_pattern is not self._mask_source:
            self._masks = {}
            self._mask_source = rank_pattern
            truncated = self.adapter_name not in next(iter(rank_pattern.keys()))
            for n, p in model.named_parameters():
                if f"lora_E.{self.adapter_name}" in n:
                    key = n.replace(f".{self.adapter_name}", "") if truncated else n
                    keep = torch.tensor(rank_pattern[key], dtype=torch.bool, device=p.device).unsqueeze(-1)
                    self._masks[n] = ~keep
            self._lora_e = [(p, self._masks[n]) for n, p in model.named_parameters() if n in self._masks]
        with torch.no_grad():
            for p, drop in self._lora_e:
                p.masked_fill_(drop, 0.0)


def install(peft_model: torch.nn.Module) -> None:
    """Swap PEFT's allocator of an AdaLoRA model for the batched one (same config, same adapter)."""
    tuner = peft_model.base_model
    old = tuner.rankallocator
    tuner.rankallocator = BatchedRankAllocator(tuner.model, old.peft_config, old.adapter_name)


class RankBook:
    """AdaLoRA's rank pruning as a run goes: calls PEFT's ``update_and_allocate`` and records it.

    ``step`` must be called once per optimizer step, after ``optimizer.step()`` and before
    ``zero_grad()`` (PEFT's docstring of ``update_and_allocate``). ``allocation`` (module -> rank)
    and ``budget_curve`` ([[step, total rank], ...]) are plain copies, never PEFT's own objects.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._names = list(adapted_modules(model))  # walked once, not at every rank pruning
        self.allocation = allocation(model, self._names)
        self.budget_curve = [[0, sum(self.allocation.values())]]
        self.final = False

    def step(self, step: int) -> bool:
        """One optimizer step's ``update_and_allocate``; True when it pruned ranks (``final``: the last time)."""
        config = self.model.peft_config[ADAPTER]
        before = config.rank_pattern
        self.model.base_model.update_and_allocate(step)
        if config.rank_pattern is before:  # no rank pruning at this step
            return False
        self._record(step)
        self.final = step == config.total_step - config.tfinal
        return True

    def finish(self, step: int) -> bool:
        """Force the final allocation when the run stopped before ``total_step - tfinal``; True if done now."""
        allocator = self.model.base_model.rankallocator
        if self.final or not allocator.exp_avg_ipt:  # done, or no importance scores to rank yet
            return False
        config = self.model.peft_config[ADAPTER]
        config.rank_pattern = allocator.mask_to_budget(self.model.base_model.model, allocator.target_bgt)
        self._record(step)
        self.final = True
        return True

    def _record(self, step: int) -> None:
        self.allocation = allocation(self.model, self._names)
        self.budget_curve.append([step, sum(self.allocation.values())])


def adapted_modules(model: torch.nn.Module) -> dict[str, SVDLinear]:
    """AdaLoRA layers by their name in the base transformers model (``bert.encoder...query``)."""
    inner = model.base_model.model if isinstance(model, PeftModel) else model
    return {name: m for name, m in inner.named_modules() if isinstance(m, SVDLinear)}


def allocation(model: torch.nn.Module, names: list[str] | None = None) -> dict[str, int]:
    """Current rank per adapted module: init_r before the first rank pruning, then the masks' sums.

    ``names``: the adapted modules' names when the caller knows them (``adapted_modules`` walks the model).
    """
    config = model.peft_config[ADAPTER]
    ranks = {name: config.init_r for name in (names if names is not None else adapted_modules(model))}
    pattern = config.rank_pattern or {}
    suffix = f".lora_E.{ADAPTER}"
    for key, mask in pattern.items():
        name = key[: -len(suffix)] if key.endswith(suffix) else key.removesuffix(".lora_E")
        ranks[name] = int(sum(mask.tolist() if torch.is_tensor(mask) else mask))
    return ranks

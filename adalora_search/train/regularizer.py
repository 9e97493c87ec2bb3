"""AdaLoRA's orthogonal regularizer, batched: PEFT's value with a few ``bmm`` instead of a loop.

PEFT adds ``orth_reg_weight * R`` to the loss inside ``AdaLoraModel.forward`` (peft 0.21,
``tuners/adalora/model.py``), with R the mean over every adapter matrix of ``‖P Pᵀ − I‖_F``
(``lora_A``, [r, in]) and ``‖Qᵀ Q − I‖_F`` (``lora_B``, [out, r]) — the paper's eq. 4 (Zhang et
al., ICLR 2023). It walks every model parameter by name and runs one small product and norm per
matrix, forward and backward: 288 of each per step at 144 adapted matrices. Here the matrices
of one shape are stacked once per step and go through one batched product and norm.

The engine calls the transformers model under PEFT's wrapper (so PEFT's own regularizer is not
computed, and not counted twice) and adds :meth:`OrthogonalRegularizer.loss` to the task loss.
"""

from __future__ import annotations

import torch

ADAPTER = "default"


class OrthogonalRegularizer:
    """``orth_reg_weight * R`` for the adapter matrices of an AdaLoRA ``PeftModel``.

    Args:
        model: the ``PeftModel`` wrapping an AdaLoRA model (``model.base_model.model`` is the
            transformers model PEFT's ``AdaLoraModel.forward`` runs).
        adapter: the adapter name (PEFT's ``trainable_adapter_name``).

    Raises:
        ValueError: ``orth_reg_weight`` is negative (PEFT raises the same in its forward).
    """

    def __init__(self, model: torch.nn.Module, adapter: str = ADAPTER):
        self.weight = float(model.peft_config[adapter].orth_reg_weight)
        if self.weight < 0:
            raise ValueError(f"orth_reg_weight must be >= 0, but got {self.weight}")
        # PEFT's selection and order: named_parameters of the transformers model, A then B per module
        groups: dict[tuple[str, tuple[int, ...]], list[torch.nn.Parameter]] = {}
        for name, p in model.base_model.model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and adapter in name and p.numel():
                kind = "A" if "lora_A" in name else "B"
                groups.setdefault((kind, tuple(p.shape)), []).append(p)
        self.groups = list(groups.items())
        self.count = sum(len(params) for _, params in self.groups)

    def value(self) -> torch.Tensor:
        """R, the mean Frobenius distance of ``P Pᵀ`` and ``Qᵀ Q`` from the identity (0-dim tensor)."""
        total = torch.zeros(())
        for (kind, _), params in self.groups:
            stacked = torch.stack(params)  # [n, r, in] or [n, out, r]
            cov = stacked @ stacked.mT if kind == "A" else stacked.mT @ stacked  # [n, r, r]
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            total = total.to(cov) + torch.linalg.matrix_norm(cov - eye, ord="fro").sum()
        return total / max(self.count, 1)

    def loss(self) -> torch.Tensor:
        """``orth_reg_weight * R``: what PEFT adds to the model's loss (0-dim tensor)."""
        if self.weight == 0 or not self.count:
            return torch.zeros(())
        return self.weight * self.value()

"""Muon (Keller Jordan, 2024): momentum whose update is orthogonalised by a Newton–Schulz
iteration, for convolution filters; the other parameters take plain (Nesterov) SGD steps.

This is the optimizer of airbench94_muon (94% on CIFAR-10 in 8 epochs instead of airbench94's
9.9). `torch.optim.Muon` takes 2-D matrices only, so convolution filters, which Muon sees as
(out, in·kh·kw) matrices, need this class. One optimizer holds both kinds of group, so the
trainer, schedules (per-group `initial_lr`), checkpoints and resume treat it like any other.

    optimizer = Muon([{"params": filters, "orthogonalize": True},
                      {"params": others, "lr": 106.0, "momentum": 0.85, "weight_decay": 4e-5}],
                     lr=0.24, momentum=0.6)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# The quintic iteration's coefficients from the Muon write-up: chosen to maximise the slope at
# zero, so 3 steps bring every singular value of a norm-1 matrix into about [0.5, 1.5].
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


@torch.no_grad()
def orthogonalize(matrix: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """About U·Vᵀ of `matrix`'s singular value decomposition U·S·Vᵀ (S → roughly 1).

    matrix: (rows, cols), any float dtype (computed in fp32). Returns the same shape.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.float() / (matrix.norm() + eps)  # singular values ≤ 1, where the iteration converges
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T  # (rows, rows)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(matrix.dtype)


class Muon(torch.optim.Optimizer):
    """Per group, `orthogonalize` chooses the update:

    - True (convolution filters, ≥ 2-D): momentum buffer m·buf + g (Nesterov: g + m·buf),
      flattened to (out, rest), orthogonalised, and subtracted × lr; before each step the
      filter is rescaled to Frobenius norm √out, so the step size is relative and no weight
      decay is needed (airbench94_muon's weight normalisation).
    - False: SGD exactly as `torch.optim.SGD` with momentum, `nesterov` and coupled weight decay.

    Args:
        params: parameters or groups (dicts with "params" and any of the keys below).
        lr, momentum, nesterov, weight_decay: defaults for groups that do not set them.
        ns_steps: Newton–Schulz iterations (airbench94_muon: 3).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        ns_steps: int = 3,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(
                f"Muon needs lr > 0, 0 ≤ momentum < 1, weight_decay ≥ 0 and ns_steps ≥ 1; got "
                f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, ns_steps={ns_steps}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "ns_steps": ns_steps,
            "orthogonalize": False,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            flat = [p for p in group["params"] if p.ndim < 2]
            if group["orthogonalize"] and flat:
                raise ValueError(
                    f"Muon orthogonalises matrices and filters; a group with orthogonalize=True "
                    f"holds a tensor of shape {tuple(flat[0].shape)}: put it in a plain group"
                )

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim.Optimizer's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        grad = param.grad
        if group["weight_decay"] and not group["orthogonalize"]:
            grad = grad.add(param, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum:
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param)
            buffer = state["momentum_buffer"].mul_(momentum).add_(grad)
            grad = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
        if group["orthogonalize"]:
            param.mul_(param.shape[0] ** 0.5 / param.norm().clamp_min(1e-12))
            grad = orthogonalize(grad.reshape(len(grad), -1), group["ns_steps"]).view_as(param)
        param.add_(grad, alpha=-group["lr"])

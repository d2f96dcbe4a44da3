"""One forward pass for T copies of a model with different weights: how MAML adapts the episodes
of a meta-batch together.

Each episode adapts its own copy of the weights, so a meta-batch runs T different networks.
For a plain stack of layers (conv, batch norm, ReLU, max-pool, flatten, linear, as Conv-4 and
the MLPs are) the T networks are one network: the T inputs side by side as channel groups
(B, T*C, H, W), the convolutions grouped (`groups=T`), batch norm per channel (so per episode,
as the per-episode loop computes it), the linear layers one batched matrix product. Every op is
an ordinary differentiable torch op, so second-order gradients are exact (tests/test_fewshot.py
checks them against finite differences), and on a CPU one big op replaces T small ones.

torch.func.vmap would do the same batching for any model, but in torch 2.13 its second-order
gradients through batch norm are wrong (off by ~1e-3) and on a 2-core CPU it is slower than
the loop (BENCHMARKS.md, "Meta-learning"); models this module cannot take adapt one episode at a
time instead.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.Identity)


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's leaf layers in order with their parameter-name prefixes, when it is a
    (nested) nn.Sequential of SUPPORTED layers; otherwise an empty list."""
    if not isinstance(model, nn.Sequential):
        return []
    found = []
    for name, module in model.named_children():
        if isinstance(module, nn.Sequential):
            inner = layers(module)
            if not inner:
                return []
            found += [(f"{name}.{child}", layer) for child, layer in inner]
        elif type(module) in SUPPORTED and supported_layer(module):
            found.append((name, module))
        else:
            return []
    return found


def supported_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros"
    if isinstance(module, nn.Flatten):
        return module.start_dim == 1 and module.end_dim == -1
    return True


def can_batch(model: nn.Module) -> bool:
    """Whether `batched_forward` can run this model."""
    return bool(layers(model))


def batched_forward(
    model: nn.Module, weights: dict[str, torch.Tensor], inputs: torch.Tensor
) -> torch.Tensor:
    """T copies of `model`, copy t with weights {name: weights[name][t]}, on inputs[t].

    Args:
        weights: every parameter of `model`, stacked: (T, *parameter.shape).
        inputs: (T, B, C, H, W) images (or (T, B, F) features for an MLP).

    Returns:
        outputs (T, B, N). Batch norm always normalises with the batch's statistics (per
        copy and channel); running statistics are neither used nor updated.
    """
    count, batch = inputs.shape[:2]
    if inputs.dim() == 5:  # (T, B, C, H, W) → (B, T*C, H, W): copies as channel groups
        x = inputs.transpose(0, 1).reshape(batch, -1, *inputs.shape[3:])
    else:  # (T, B, F) → (B, T, F)
        x = inputs.transpose(0, 1)
    for name, layer in layers(model):
        x = apply_layer(layer, name, weights, x, count)
    return x.transpose(0, 1)  # (T, B, N)


def apply_layer(
    layer: nn.Module, name: str, weights: dict[str, torch.Tensor], x: torch.Tensor, count: int
) -> torch.Tensor:
    """One layer for all T copies: x is (B, T*C, H, W) before flattening, (B, T, F) after."""
    weight, bias = weights.get(f"{name}.weight"), weights.get(f"{name}.bias")
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(
            x, weight.flatten(0, 1), None if bias is None else bias.flatten(),
            layer.stride, layer.padding, layer.dilation, groups=count,
        )  # fmt: skip
    if isinstance(layer, nn.BatchNorm2d):
        return F.batch_norm(
            x, None, None, None if weight is None else weight.flatten(),
            None if bias is None else bias.flatten(), training=True, eps=layer.eps,
        )  # fmt: skip
    if isinstance(layer, nn.ReLU):
        return F.relu(x)
    if isinstance(layer, nn.MaxPool2d):
        return F.max_pool2d(
            x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
        )
    if isinstance(layer, nn.Flatten):
        return x if x.dim() == 3 else x.reshape(x.shape[0], count, -1)  # (B, T, C*H*W)
    if isinstance(layer, nn.Linear):
        out = torch.einsum("btf,tnf->btn", x, weight)
        return out if bias is None else out + bias.unsqueeze(0)
    return x  # nn.Identity

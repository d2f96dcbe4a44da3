"""`neuralab summary`: a model's layers with output shapes, parameter counts and FLOPs for one
example, plus totals (parameters, size in MB, FLOPs per example).

FLOPs come from torch's own counter (`torch.utils.flop_counter.FlopCounterMode`), which counts
matrix products, convolutions and attention (a multiply-add is 2 FLOPs). Recurrent kernels
(nn.LSTM/GRU/RNN) and CPU attention kernels are not among the ops it knows, so those layers'
FLOPs are computed from their sizes instead: 2 × gates × hidden × (input + hidden) per step,
direction and layer for recurrent layers (gates: LSTM 4, GRU 3, RNN 1), and for self-attention
over T tokens of width E: 2·T·E·3E (projections in) + 4·T²·E (scores and weighted sum) + 2·T·E²
(projection out). Biases, softmax and element-wise arithmetic are left out, as the counter
leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Shown as one row each (their inner pieces are not separate layers to a reader).
COMPOSITE = (nn.RNNBase, nn.MultiheadAttention)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: str
    parameters: int
    flops: int


@dataclass(frozen=True)
class ModelSummary:
    rows: list[LayerRow]
    parameters: int
    trainable: int
    megabytes: float  # parameters and buffers as stored
    flops: int  # per example, forward pass

    def format(self) -> str:
        """The table `neuralab summary` prints."""
        width = max(24, *(len(r.name) for r in self.rows)) if self.rows else 24
        lines = [f"{'layer':<{width}}  {'type':<20} {'output':<18} {'params':>10} {'FLOPs':>12}"]
        for row in self.rows:
            lines.append(
                f"{row.name:<{width}}  {row.kind:<20} {row.output_shape:<18} "
                f"{row.parameters:>10,} {row.flops:>12,}"
            )
        lines.append(self.totals())
        return "\n".join(lines)

    def totals(self) -> str:
        """One line: what every run's log shows for its model."""
        return (
            f"{self.parameters:,} parameters ({self.trainable:,} trainable, "
            f"{self.megabytes:.1f} MB), {format_flops(self.flops)} per example"
        )


def format_flops(flops: int) -> str:
    for unit, size in (("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if flops >= size:
            return f"{flops / size:.2f} {unit}"
    return f"{flops} FLOPs"


def summarize(model: nn.Module, example: torch.Tensor) -> ModelSummary:
    """Run `example` (a batch of one: (1, C, H, W) images or (1, T) token ids) through `model`
    in eval mode and tabulate its leaf layers. The model's training mode is restored."""
    shapes: dict[str, str] = {}
    steps: dict[str, int] = {}  # time steps seen by each recurrent layer
    hooks = []
    leaves = layers_of(model)
    for name, module in leaves.items():
        hooks.append(module.register_forward_hook(shape_recorder(shapes, steps, name)))
    was_training, fast_path = model.training, torch.backends.mha.get_fastpath_enabled()
    model.eval()
    # The fused inference path of nn.TransformerEncoderLayer hides its layers from the counter.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fast_path)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    rows, total = [], int(counter.get_total_flops())
    for name, module in leaves.items():
        if name not in shapes:
            continue  # not used for this input (e.g. an unused branch)
        flops = int(sum(per_module.get(f"{root}.{name}", {}).values()))
        if isinstance(module, COMPOSITE):  # what the counter saw of it is replaced
            total -= flops
            flops = composite_flops(module, steps[name])
            total += flops
        parameters = sum(p.numel() for p in module.parameters())
        rows.append(LayerRow(name, type(module).__name__, shapes[name], parameters, flops))
    stored = [*model.parameters(), *model.buffers()]
    return ModelSummary(
        rows,
        sum(p.numel() for p in model.parameters()),
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(t.numel() * t.element_size() for t in stored) / 1e6,
        total,
    )


def layers_of(model: nn.Module) -> dict[str, nn.Module]:
    """Leaf modules, with COMPOSITE ones (RNNs, attention) kept whole."""
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        inside = any(name.startswith(f"{outer}.") for outer in layers)
        if name and not inside and (isinstance(module, COMPOSITE) or not list(module.children())):
            layers[name] = module
    return layers


def composite_flops(module: nn.Module, steps: int) -> int:
    """Forward FLOPs of a recurrent layer or a self-attention layer over `steps` tokens."""
    if isinstance(module, nn.MultiheadAttention):
        width = module.embed_dim
        return 2 * steps * width * 3 * width + 4 * steps * steps * width + 2 * steps * width**2
    gates = GATES.get(type(module).__name__, 1)
    directions = 2 if module.bidirectional else 1
    hidden, total = module.hidden_size, 0
    for layer in range(module.num_layers):
        inputs = module.input_size if layer == 0 else hidden * directions
        total += 2 * gates * hidden * (inputs + hidden) * steps * directions
    return total


def shape_recorder(shapes: dict[str, str], steps: dict[str, int], name: str):
    def record(module: nn.Module, inputs, output) -> None:
        first = output[0] if isinstance(output, tuple) else output
        if isinstance(first, torch.Tensor):
            shapes[name] = "×".join(map(str, first.shape))
            if isinstance(module, COMPOSITE):
                steps[name] = first.shape[1 if module.batch_first else 0]

    return record

"""Export formats: the modules an export holds, and for each format how to write the file and
how to run what was written (`FORMATS`). `neuralab.export` drives them and checks the parity.

ONNX goes through the TorchScript-based exporter (`dynamo=False`): the torch.export-based one
needs onnxscript and cannot trace the text models' data-dependent masks without rewrites. The
parity check on batches of other sizes and lengths vouches for every export it writes.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from neuralab.data.heads import Head, affine
from neuralab.errors import UserError
from neuralab.inference.predict import Predictor
from neuralab.modalities import MODALITIES
from neuralab.models import build_model

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
EXPORT_EXTRA = "pip install 'neuralab[export]'"
# opset 17 (ONNX 1.12, 2022) has LayerNormalization as one op, and current runtimes all run it.
ONNX_OPSET = 17


class ExportError(UserError, ValueError):
    """The model cannot be exported, or the export does not match PyTorch (nothing written)."""


def require_onnx() -> None:
    """Fail early, before any work, when the ONNX tools are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs onnx and onnxruntime ({error}): {EXPORT_EXTRA}"
        ) from None


def describe_contract(predictor: Predictor, format: str) -> dict:
    """What the exported model takes and returns, stored inside it and in the sidecar."""
    meta, classes = predictor.meta, predictor.meta.classes
    contract = {
        "neuralab_export": 1, "format": format, "kind": predictor.modality.kind,
        "model": {"name": meta.model.name, "args": meta.model.args}, "spec": meta.spec,
        "classes": classes,
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(classes)],
                   "note": "softmax over axis 1 gives class probabilities"},
    }  # fmt: skip
    if predictor.heads:  # several label fields: which columns are whose
        contract["heads"] = [head.to_dict() for head in predictor.heads]
        contract["output"]["note"] = (
            "columns per head, in `heads` order: a classification head's columns are its "
            "classes' logits (softmax them on their own), a regression head's one column is "
            "its value in the field's units"
        )
    bare = format == "safetensors"
    return {**contract, **predictor.modality.export_contract(bare, predictor.task.tta)}


def graph_module(model: nn.Module, contract: dict) -> nn.Module:
    """The module an export holds: the model behind its modality's graph (images are
    normalised, and TTA-averaged, inside it). A model with a `for_export` method gives the
    copy to trace (e.g. ngram folds its naive-Bayes tables into one)."""
    exported = model.for_export() if hasattr(model, "for_export") else model
    graph = MODALITIES[contract["kind"]].export_graph(exported, contract)
    heads = [Head.from_dict(raw) for raw in contract.get("heads", ())]
    if any(head.kind == "regression" for head in heads):
        graph = HeadOutputs(graph, heads)
    return graph


class HeadOutputs(nn.Module):
    """A model whose regression columns come out in their field's units (data/heads.py:
    the model learns them standardised), as the run's task predicts them."""

    def __init__(self, model: nn.Module, heads: list[Head]) -> None:
        super().__init__()
        self.model = model
        scale, shift = affine(heads)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs).float() * self.scale + self.shift


class TraceableSelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention's batch-first self-attention, same weights and maths, written with
    reshapes that keep the sequence length symbolic: the TorchScript-based ONNX exporter
    freezes T in nn.MultiheadAttention's own reshapes (pytorch/pytorch#122321), and the export
    then fails on any other length. Padding masks only (what TransformerEncoder passes)."""

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """(B, T, E) → ((B, T, E), None): nn.MultiheadAttention's signature and results."""
        if key is not query or value is not query or attn_mask is not None or is_causal:
            raise ExportError("ONNX export handles self-attention with a padding mask only")
        batch = query.shape[0]
        q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, T, E) → (B, heads, T, E / heads)
            return x.reshape(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        mask = None
        if key_padding_mask is not None:  # (B, T): True or -inf where padding
            mask = key_padding_mask[:, None, None, :]
            if mask.dtype == torch.bool:
                mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill(mask, float("-inf"))
        attended = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, -1, self.embed_dim)), None


def onnx_friendly(module: nn.Module) -> nn.Module:
    """A copy of `module` with every nn.MultiheadAttention replaced by TraceableSelfAttention."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.MultiheadAttention:
                continue
            if not (child.batch_first and child._qkv_same_embed_dim and child.bias_k is None):
                raise ExportError("ONNX export handles batch-first nn.MultiheadAttention only")
            traceable = TraceableSelfAttention(
                child.embed_dim, child.num_heads, bias=child.in_proj_bias is not None,
                batch_first=True,
            )  # fmt: skip
            traceable.load_state_dict(child.state_dict())
            setattr(parent, name, traceable.eval())
    return module


# ------------------------------------------------------------------- formats: write, then run

Writer = Callable[[nn.Module, torch.Tensor, Path, dict], None]
Runner = Callable[[Path, list[torch.Tensor]], list[torch.Tensor]]


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path, contract: dict) -> None:
    import onnx

    input_name = contract["input"]["name"]
    dynamic = MODALITIES[contract["kind"]].dynamic_axes
    torch.onnx.export(
        onnx_friendly(module), (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
        input_names=[input_name], output_names=["logits"],
        dynamic_axes={input_name: dynamic, "logits": {0: "batch"}},
    )  # fmt: skip
    # dynamo=False: the torch.export-based exporter needs onnxscript and cannot trace the text
    # models' data-dependent masks without rewrites; the parity check vouches for this one.
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "neuralab", json.dumps(contract)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def run_onnx(path: Path, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 4  # failures come back as our own ExportError
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(session.run(None, {name: batch.numpy()})[0]) for batch in batches]


def write_torchscript(module: nn.Module, example: torch.Tensor, path: Path, contract: dict) -> None:
    traced = torch.jit.trace(module, (example,), check_trace=False)  # checked below instead
    torch.jit.save(traced, str(path), _extra_files={"neuralab.json": json.dumps(contract)})


@torch.inference_mode()
def run_torchscript(path: Path, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.jit is deprecated"
        loaded = torch.jit.load(str(path)).eval()
    return [loaded(batch).float() for batch in batches]


def write_safetensors(module: nn.Module, example: torch.Tensor, path: Path, contract: dict) -> None:
    from safetensors.torch import save_file

    if isinstance(module, HeadOutputs):  # the weights only: run_safetensors adds it back
        module = module.model
    bare = MODALITIES[contract["kind"]].bare_model(module)
    weights = {k: v.detach().contiguous().cpu() for k, v in bare.state_dict().items()}
    save_file(weights, str(path), metadata={"neuralab": json.dumps(contract)})


@torch.inference_mode()
def run_safetensors(path: Path, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rebuild the model from the file alone (its metadata and weights) and run it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        contract = json.loads(handle.metadata()["neuralab"])
    spec_type = MODALITIES[contract["kind"]].spec_type
    model = build_model(contract["model"]["name"], spec_type(**contract["spec"]),
                        **contract["model"]["args"])  # fmt: skip
    model.load_state_dict(load_file(str(path)))
    module = graph_module(model, contract)
    return [module(batch).float() for batch in batches]


FORMATS: dict[str, tuple[Writer, Runner]] = {
    "onnx": (write_onnx, run_onnx),
    "torchscript": (write_torchscript, run_torchscript),
    "safetensors": (write_safetensors, run_safetensors),
}

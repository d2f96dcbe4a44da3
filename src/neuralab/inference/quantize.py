"""`neuralab export RUN --format onnx --quantize int8`: an int8 ONNX model, gated on accuracy.

The run is first exported to fp32 ONNX (with export's parity check), then quantized with
onnxruntime's tools (the well-kept toolchain; we write no quantizer of our own):

    image runs   static quantization: weights int8 per output channel, activations uint8 with
                 ranges calibrated on `calibration` training images, written as integer
                 operators (QLinearConv, QLinearMatMul, ...: on cifar10-best 10% faster for
                 one image than the QDQ format, which onnxruntime fuses when it loads it)
    text runs    dynamic quantization: int8 weights of matrix products, recurrent layers and
                 embedding / n-gram tables; activations quantized per batch at run time

The int8 model is then run on the run's test split (all of it unless `check_examples` says
fewer) beside the fp32 one. It is written only if it loses at most `max_drop` accuracy points;
otherwise nothing is written and the error gives both accuracies. The sidecar `<out>.json`
holds the export contract (the same inputs and outputs as the fp32 export) and a
"quantization" block with the method, the accuracies, top-1 agreement and both sizes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from neuralab.inference.export import export, replace_atomically, run_dataset, staged
from neuralab.inference.exporters import ExportError, require_onnx
from neuralab.inference.predict import Predictor, checkpoint_folder

DEFAULT_MAX_DROP = 0.5  # accuracy points an int8 model may lose against fp32 before it is refused
DEFAULT_CALIBRATION = 512  # training images whose activations set the int8 ranges
CALIBRATION_BATCH = 64
EVALUATION_BATCH = 256
# ONNX ops that hold an int8 computation once quantized (QDQ models keep float ops between
# QuantizeLinear / DequantizeLinear pairs; integer-operator models have QLinear* ops).
QUANTIZED_OPS = {
    "QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
    "QLinearMatMul", "DynamicQuantizeLSTM", "DequantizeLinear", "QGemm",
}  # fmt: skip


@dataclass
class QuantizeResult:
    """What `quantize` wrote and what it measured on the test split."""

    path: Path
    method: str
    accuracy_fp32: float
    accuracy_int8: float
    top1_agreement: float
    examples: int
    bytes_fp32: int
    bytes_int8: int
    seconds: float
    sidecar: Path | None = None

    @property
    def drop(self) -> float:
        """Accuracy points lost (negative: the int8 model did better)."""
        return 100 * (self.accuracy_fp32 - self.accuracy_int8)


def quantize(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    max_drop: float = DEFAULT_MAX_DROP,
    calibration: int = DEFAULT_CALIBRATION,
    check_examples: int | None = None,
    data_dir: str | Path | None = None,
) -> QuantizeResult:
    """Quantize a run's ONNX export to int8 and write it only if it keeps its accuracy.

    Args:
        run_dir: a run directory (or its checkpoint folder).
        out: destination file or folder (default `<run>/export/<model>.int8.onnx`).
        max_drop: most test accuracy points the int8 model may lose against fp32.
        calibration: training images that calibrate the activation ranges (image runs).
        check_examples: test examples to compare on (default: the whole test split).
        data_dir: where the run's dataset lives, if not where it was trained from.

    Raises:
        ExportError: a layer the quantizer cannot take, or too much accuracy lost (nothing
            written in either case).

    Example:
        >>> neuralab.quantize("runs/mnist-best").drop  # doctest: +SKIP
        0.02
    """
    start = time.perf_counter()
    check_settings(max_drop, calibration, check_examples)
    require_onnx()
    predictor = Predictor.load(run_dir)
    if predictor.heads:
        raise ExportError(
            f"{run_dir} learned several label fields; int8 is judged on the test accuracy of "
            "one label. Export it in fp32 (neuralab export RUN --format onnx)"
        )
    destination = default_destination(run_dir, predictor, out)
    dataset = run_dataset(
        predictor, data_dir, "int8 calibrates on its training split and is judged on its test split"
    )
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=destination.parent) as work:
        fp32 = export(run_dir, "onnx", Path(work) / "fp32.onnx", 200, data_dir=data_dir).path
        int8 = Path(work) / "int8.onnx"
        method = quantize_file(predictor, dataset, fp32, int8, calibration)
        measured = compare_on_test(predictor, dataset, fp32, int8, check_examples)
        result = QuantizeResult(destination, method, *measured, fp32.stat().st_size,
                                int8.stat().st_size, 0.0)  # fmt: skip
        refuse_if_worse(result, predictor, max_drop)
        with staged(destination) as staging:
            shutil.copyfile(int8, staging)
            result.sidecar = write_sidecar(fp32, destination, result, max_drop)
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def check_settings(max_drop: float, calibration: int, check_examples: int | None) -> None:
    if max_drop < 0 or calibration < 1 or (check_examples is not None and check_examples < 1):
        raise ExportError(
            f"--max-drop must be >= 0 accuracy points, --calibration and --check-examples >= 1; "
            f"got {max_drop}, {calibration}, {check_examples}"
        )


def default_destination(run_dir: str | Path, predictor: Predictor, out) -> Path:
    """`<run>/export/<model>.int8.onnx`, or `out` (a folder gets that name inside it)."""
    folder = checkpoint_folder(run_dir)
    run = folder.parent if folder.name == "checkpoint" else folder
    name = f"{predictor.meta.model.name}.int8.onnx"
    if out:
        destination = Path(out) / name if Path(out).is_dir() else Path(out)
    else:
        destination = run / "export" / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    return destination


# ----------------------------------------------------------------------------- quantizing


def quantize_file(predictor: Predictor, dataset, fp32: Path, int8: Path, calibration: int) -> str:
    """Quantize `fp32` into `int8`; returns the method. Failures name the layer."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = predictor.meta.model.name
    try:
        if predictor.modality.kind == "image":
            reader = CalibrationImages(dataset.train.images, calibration, input_name(fp32))
            prepared = fp32.with_name("prepared.onnx")  # shapes inferred, ops fused first
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(
                str(prepared), str(int8), reader, quant_format=QuantFormat.QOperator,
                per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )  # fmt: skip
            method = (
                f"static (integer operators, per-channel int8 weights, {reader.count} "
                "calibration images)"
            )
        else:
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
            method = "dynamic (int8 weights, activations quantized per batch)"
    except Exception as error:  # the quantizer raises many types; all mean "cannot take it"
        raise ExportError(
            f"onnxruntime cannot quantize model {name!r}: {str(error)[:400]}; nothing was "
            "written. Export it without --quantize (fp32 ONNX runs everywhere)"
        ) from None
    require_quantized_layers(compact_graph(int8), fp32, predictor)
    return method


def compact_graph(path: Path) -> set[str]:
    """Store each distinct constant once and give the graph's inner values short names.

    A graph with test-time augmentation runs the model once per view, and the quantizer gives
    every use of a weight its own int8 copy (6 views: 6 identical copies). And the quantizer's
    descriptive value names ("ConvBnFusion_W_model.body.2.4.weight_token_16_quantized", each
    written at every use) weigh a fifth of a small int8 file. The graph's inputs, outputs and
    metadata keep their names.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph, first, rename = model.graph, {}, {}
    for tensor in list(graph.initializer):
        key = (tensor.data_type, tuple(tensor.dims), numpy_helper.to_array(tensor).tobytes())
        if key in first:
            rename[tensor.name] = first[key]
            graph.initializer.remove(tensor)
        else:
            first[key] = tensor.name
    public = {value.name for value in [*graph.input, *graph.output]}
    short: dict[str, str] = {}

    def named(name: str) -> str:
        name = rename.get(name, name)
        if not name or name in public:
            return name
        return short.setdefault(name, f"v{len(short)}")

    for tensor in graph.initializer:
        tensor.name = named(tensor.name)
    for index, node in enumerate(graph.node):
        node.name, node.doc_string = f"n{index}", ""
        node.input[:] = [named(name) for name in node.input]
        node.output[:] = [named(name) for name in node.output]
    del graph.value_info[:]  # shapes of inner values: onnxruntime infers them again
    onnx.save(model, str(path))
    return {node.op_type for node in graph.node}


class CalibrationImages:
    """onnxruntime's CalibrationDataReader over `count` training images spread evenly over
    the split, as the export takes them: uint8 (B, C, H, W) batches."""

    def __init__(self, images: torch.Tensor, count: int, name: str) -> None:
        self.name = name
        index = torch.linspace(0, len(images) - 1, min(count, len(images))).round().long()
        chosen = images[index.unique()]
        self.count = len(chosen)
        self.batches = iter(chosen.split(CALIBRATION_BATCH))

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch.numpy()}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all we need
        raise NotImplementedError("calibration reads the images once")


def input_name(path: Path) -> str:
    """The export's input name, from the sidecar `export` wrote beside it (no model load)."""
    sidecar = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    return sidecar["input"]["name"]


def require_quantized_layers(ops: set[str], fp32: Path, predictor: Predictor) -> None:
    """The quantizer skips ops it cannot take without saying so: a model with no integer op
    left is refused, naming its layers and their ONNX ops."""
    import onnx

    if ops & QUANTIZED_OPS:  # ops: the int8 graph's op types
        return
    model = predictor.model
    layers = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
    graph = sorted({node.op_type for node in onnx.load(str(fp32)).graph.node})
    raise ExportError(
        f"onnxruntime's quantizer has no int8 form for any layer of model "
        f"{predictor.meta.model.name!r} (layers: {', '.join(layers)}; their ONNX ops: "
        f"{', '.join(graph)}); nothing was written. Export it without --quantize"
    )


# ----------------------------------------------------------------------- the accuracy gate


def compare_on_test(
    predictor: Predictor, dataset, fp32: Path, int8: Path, count: int | None
) -> tuple[float, float, float, int]:
    """(fp32 accuracy, int8 accuracy, top-1 agreement, examples) on the test split."""
    total = len(dataset.test)
    index = torch.arange(total)
    if count is not None and count < total:  # evenly spread: test splits are often sorted
        index = torch.linspace(0, total - 1, count).round().long().unique()
    examples = predictor.modality.split_examples(dataset.test, index, dataset.name)
    labels = dataset.test.labels[index]
    full, small = session(fp32), session(int8)
    top_full, top_small = [], []
    for start in range(0, len(index), EVALUATION_BATCH):
        batch = predictor.modality.collate(examples[start : start + EVALUATION_BATCH]).numpy()
        top_full.append(torch.from_numpy(full.run(None, {full.input: batch})[0]).argmax(1))
        top_small.append(torch.from_numpy(small.run(None, {small.input: batch})[0]).argmax(1))
    full_top, small_top = torch.cat(top_full), torch.cat(top_small)
    return (
        (full_top == labels).float().mean().item(),
        (small_top == labels).float().mean().item(),
        (full_top == small_top).float().mean().item(),
        len(labels),
    )


def session(path: Path):
    """An onnxruntime session on the CPU, with the name of its one input as `.input`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    loaded = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    loaded.input = loaded.get_inputs()[0].name
    return loaded


def refuse_if_worse(result: QuantizeResult, predictor: Predictor, max_drop: float) -> None:
    if result.drop <= max_drop:
        return
    raise ExportError(
        f"the int8 model of {predictor.meta.model.name!r} loses {result.drop:.2f} accuracy "
        f"points on {result.examples} test examples ({result.accuracy_fp32:.2%} fp32 → "
        f"{result.accuracy_int8:.2%} int8), more than --max-drop {max_drop:g}; nothing was "
        "written. Use the fp32 export, or allow a larger --max-drop"
    )


def write_sidecar(fp32: Path, destination: Path, result: QuantizeResult, max_drop: float) -> Path:
    """`<out>.json`: the fp32 export's contract (the same inputs and outputs), the
    quantization figures, and a text run's tokenizer beside it."""
    contract = json.loads(fp32.with_name(fp32.name + ".json").read_text(encoding="utf-8"))
    figures = {k: v for k, v in asdict(result).items() if k not in ("path", "sidecar", "seconds")}
    contract |= {"file": destination.name, "quantization": {**figures, "max_drop": max_drop}}
    tokenizer = contract["input"].get("tokenizer_file")
    if tokenizer:
        name = f"{destination.name}.tokenizer.json"
        text = fp32.with_name(tokenizer).read_text(encoding="utf-8")
        replace_atomically(destination.with_name(name), text)
        contract["input"]["tokenizer_file"] = name
    path = destination.with_name(destination.name + ".json")
    replace_atomically(path, json.dumps(contract, indent=2) + "\n")
    return path

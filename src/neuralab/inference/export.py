"""`neuralab export RUN`: a trained run → ONNX, TorchScript or safetensors, checked before it lands.

The exported model is run (onnxruntime, `torch.jit.load`, or a model rebuilt from the
safetensors file alone) on real inputs — by default up to 1,000 examples of the run's own test
split, in batches of several sizes (and, for text, of several padded lengths) — and compared with
the PyTorch model. It passes when every logit is within `tolerance` = 1e-4 × max(1, largest
|logit|) of PyTorch's and the top-1 class agrees on every example (except near-ties, where the
two classes' PyTorch logits are within 2 × tolerance and either answer is right). A model that
fails is not written: the file is built beside the destination under a temporary name and
renamed into place only once it passes, so an existing export is never replaced by a bad one.

Input contract (also in the sidecar `<out>.json`, and inside the ONNX / TorchScript file):
    image runs   ONNX / TorchScript take uint8 images (B, C, H, W) at the run's size and do the
                 normalisation ((x / 255 - mean) / std per channel) and the run's mirror TTA
                 inside the graph; safetensors holds the bare model, which takes normalised
                 float32 (B, C, H, W).
    text runs    int64 token ids (B, T) from the run's tokenizer (copied beside the export as
                 `<out>.tokenizer.json`), padded with 0 at the end of each row, at most the
                 tokenizer's max_length tokens per text.
    output       float32 logits (B, classes); batch (and text length) are dynamic.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from neuralab.data.dataset import DataError
from neuralab.errors import ConfigError
from neuralab.inference.exporters import (
    FORMATS,
    SUFFIXES,
    ExportError,
    Runner,
    Writer,
    describe_contract,
    graph_module,
    require_onnx,
)
from neuralab.inference.predict import Predictor, checkpoint_folder, predict_logits

CHECK_DATA = ("test", "random")
RELATIVE_TOLERANCE = 1e-4  # float32 exports differ by ~1e-6 relative: this leaves 100x headroom
# The check runs the examples in batches of these sizes, repeated: batch 1, odd and large sizes
# catch a batch dimension frozen at export time (and text batches get different padded lengths).
CHECK_BATCH_SIZES = (1, 2, 7, 32, 128)


@dataclass
class ExportResult:
    """What `export` wrote and how closely it matches the PyTorch model."""

    path: Path
    format: str
    max_abs_diff: float
    top1_agreement: float
    examples: int
    seconds: float
    tolerance: float = 0.0
    check_data: str = "test"
    sidecar: Path | None = None


def export(
    run_dir: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    check_examples: int = 1000,
    *,
    check_data: str = "test",
    data_dir: str | Path | None = None,
) -> ExportResult:
    """Export a saved run and check it against PyTorch on real inputs before writing it.

    Args:
        run_dir: a run directory (or its checkpoint folder).
        format: "onnx", "torchscript" or "safetensors".
        out: destination file or folder (default `<run>/export/<model><suffix>`); the sidecar is
            `<out>.json`, and text runs get `<out>.tokenizer.json`.
        check_examples: examples compared (evenly spread over the test split).
        check_data: "test" (the run's own test split, read from disk; never downloaded) or
            "random" (random images / token ids, for runs whose data is not at hand).
        data_dir: where the run's dataset lives, if not where it was trained from.

    Raises:
        ExportError: non-finite weights, an export failure, or a mismatch (nothing written).

    Example:
        >>> neuralab.export("runs/mnist-lenet-…", format="onnx").max_abs_diff  # doctest: +SKIP
        2.4e-07
    """
    start = time.perf_counter()
    if format not in SUFFIXES:
        raise ConfigError(f"export format {format!r} is unknown; valid: {', '.join(SUFFIXES)}")
    if check_data not in CHECK_DATA or check_examples < 1:
        raise ConfigError(
            f"check_data must be one of {', '.join(CHECK_DATA)} and check_examples >= 1; "
            f"got {check_data!r}, {check_examples}"
        )
    if format == "onnx":
        require_onnx()
    predictor = Predictor.load(run_dir)
    refuse_non_finite(predictor)
    destination = default_destination(run_dir, predictor, format)
    if out:  # a folder gets the default file name inside it
        destination = Path(out) / destination.name if Path(out).is_dir() else Path(out)
    batches = check_batches(predictor, check_data, check_examples, data_dir)
    reference = [reference_logits(predictor, batch) for batch in batches]
    contract = describe_contract(predictor, format)
    write, run = FORMATS[format]
    with staged(destination) as staging:
        exported = write_and_run(write, run, predictor, contract, batches, staging, destination)
        parity = Parity.measure(reference, exported)
        parity.require(predictor, format, check_data, destination)
        sidecar = write_sidecar(destination, predictor, contract, parity, check_data)
    return ExportResult(
        destination, format, parity.max_abs_diff, parity.top1_agreement, parity.examples,
        round(time.perf_counter() - start, 2), parity.tolerance, check_data, sidecar,
    )  # fmt: skip


def refuse_non_finite(predictor: Predictor) -> None:
    """NaN or Inf in any parameter or buffer: an ExportError naming the tensor."""
    name = predictor.meta.model.name
    for key, tensor in predictor.model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ExportError(
                f"model {name!r}: tensor {key!r} holds {bad} non-finite values (NaN or Inf) of "
                f"{tensor.numel()}, so nothing was exported; the run diverged — retrain it "
                "(e.g. with a lower learning rate) or export an earlier checkpoint"
            )


def default_destination(run_dir: str | Path, predictor: Predictor, format: str) -> Path:
    """`<run>/export/<model name><suffix>`."""
    folder = checkpoint_folder(run_dir)
    run = folder.parent if folder.name == "checkpoint" else folder
    return run / "export" / f"{predictor.meta.model.name}{SUFFIXES[format]}"


# ------------------------------------------------------------------------ inputs to compare on


def check_batches(
    predictor: Predictor, check_data: str, count: int, data_dir: str | Path | None
) -> list[torch.Tensor]:
    """The check inputs, as the exported model takes them, in batches of CHECK_BATCH_SIZES:
    uint8 images (B, C, H, W), or token ids int64 (B, T) each padded to its own longest text."""
    examples = test_examples if check_data == "test" else random_examples
    items = examples(predictor, count, data_dir)  # (N, C, H, W) uint8, or N id lists
    batches, start, turn = [], 0, 0
    while start < len(items):
        size = CHECK_BATCH_SIZES[turn % len(CHECK_BATCH_SIZES)]
        chunk = items[start : start + size]
        batches.append(predictor.modality.collate(chunk))
        start, turn = start + size, turn + 1
    return batches


def test_examples(predictor: Predictor, count: int, data_dir: str | Path | None):
    """Up to `count` test examples spread evenly over the split (test splits are often sorted
    by class), as the run's modality prepares them (uint8 images, or token id lists)."""
    dataset = run_dataset(
        predictor, data_dir, "the parity check reads its test split",
        "or check on random inputs with --check-data random (check_data='random')",
    )  # fmt: skip
    total = len(dataset.test)
    index = torch.linspace(0, total - 1, min(count, total)).round().long().unique()
    return predictor.modality.split_examples(dataset.test, index, dataset.name)


def run_dataset(predictor: Predictor, data_dir: str | Path | None, why: str, other: str = ""):
    """The run's own dataset, read from disk (never the network) and checked against the
    run's classes; a DataError saying `why` it is needed, and where it was looked for."""
    data = predictor.meta.data
    try:
        dataset = data.load(data_dir=str(data_dir) if data_dir else None, download=False)
    except (DataError, FileNotFoundError, OSError) as error:
        raise DataError(
            f"{data.name!r} is not available ({error}), and {why}: pass --data-dir "
            f"(data_dir=) where it lives{', ' + other if other else ''}"
        ) from None
    predictor.check_classes(dataset.classes, dataset.name)
    return dataset


def random_examples(predictor: Predictor, count: int, data_dir=None):
    """`count` seeded random inputs: uint8 images, or id lists of 0..max_length real tokens."""
    generator = torch.Generator().manual_seed(0)
    return predictor.modality.random_examples(count, predictor.meta.spec, generator)


def reference_logits(predictor: Predictor, batch: torch.Tensor) -> torch.Tensor:
    """PyTorch's logits (B, classes), computed exactly as `Predictor` computes them."""
    inputs = predictor.modality.model_inputs(batch)
    return predict_logits(predictor.model, inputs, predictor.task)


# ------------------------------------------------------------------------- write, run, compare


def write_and_run(
    write: Writer,
    run: Runner,
    predictor: Predictor,
    contract: dict,
    batches: list[torch.Tensor],
    staging: Path,
    destination: Path,
) -> list[torch.Tensor]:
    """Write the export to `staging` and run it on `batches`; any failure is an ExportError."""
    name = predictor.meta.model.name
    example = next((batch for batch in batches if len(batch) >= 2), batches[0])
    try:
        with warnings.catch_warnings():
            # The legacy exporter and jit.trace warn that they are deprecated, and about every
            # Python-level shape check they trace through; the parity check below is the guard.
            warnings.simplefilter("ignore")
            write(graph_module(predictor.model, contract), example, staging, contract)
    except Exception as error:  # exporters raise many types; all mean "cannot export"
        raise ExportError(
            f"cannot export model {name!r} to {contract['format']}: {error}; "
            f"nothing was written to {destination}"
        ) from None
    try:
        return run(staging, batches)
    except Exception as error:
        raise ExportError(
            f"the {contract['format']} export of model {name!r} fails when run on batches of "
            f"other shapes ({str(error)[:500]}); nothing was written to {destination}"
        ) from None


@dataclass
class Parity:
    """How an export's logits compare with PyTorch's on the same inputs."""

    max_abs_diff: float
    top1_agreement: float
    examples: int
    tolerance: float
    largest_logit: float
    decisive_disagreements: int  # top-1 differs although PyTorch's margin exceeds 2×tolerance

    @classmethod
    def measure(cls, reference: list[torch.Tensor], exported: list[torch.Tensor]) -> Parity:
        expected, found = torch.cat(reference).float(), torch.cat(exported).float()  # (N, K)
        if expected.shape != found.shape:
            nan = float("nan")
            return cls(nan, 0.0, len(expected), 0.0, nan, len(expected))
        largest = expected.abs().max().item()
        tolerance = RELATIVE_TOLERANCE * max(1.0, largest)
        top, top_found = expected.argmax(1), found.argmax(1)  # (N,)
        margin = expected.gather(1, top[:, None]) - expected.gather(1, top_found[:, None])
        return cls(
            max_abs_diff=(expected - found).abs().max().item(),
            top1_agreement=(top == top_found).float().mean().item(),
            examples=len(expected),
            tolerance=tolerance,
            largest_logit=largest,
            decisive_disagreements=int((margin[:, 0] > 2 * tolerance).sum()),
        )

    @property
    def passed(self) -> bool:
        # `<=` is False for NaN, so NaN logits fail too.
        return self.max_abs_diff <= self.tolerance and self.decisive_disagreements == 0

    def require(self, predictor: Predictor, format: str, data: str, destination: Path) -> None:
        """Raise an ExportError naming the model, the difference and the tolerance."""
        if self.passed:
            return
        raise ExportError(
            f"the {format} export of model {predictor.meta.model.name!r} does not match "
            f"PyTorch on {self.examples} {data} examples: max |logit difference| "
            f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g} = {RELATIVE_TOLERANCE:g} "
            f"x max(1, largest |logit| {self.largest_logit:.3g})), top-1 agreement "
            f"{self.top1_agreement:.2%}; nothing was written to {destination}. Try another "
            "--format, and please report it with the model's name and arguments"
        )

    def to_dict(self, data: str) -> dict:
        return {
            "data": data,
            "examples": self.examples,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "tolerance": self.tolerance,
            "rule": f"|logit - PyTorch logit| <= {RELATIVE_TOLERANCE:g} x max(1, largest "
            "|logit|) and the same top-1 class (except near-ties)",
        }


def write_sidecar(
    destination: Path, predictor: Predictor, contract: dict, parity: Parity, data: str
) -> Path:
    """`<out>.json` (and `<out>.tokenizer.json` for text runs), each written atomically."""
    sidecar = {"file": destination.name, **contract, "parity": parity.to_dict(data)}
    for name, text in predictor.modality.files().items():  # a text run's tokenizer.json
        path = destination.with_name(f"{destination.name}.{name}")
        replace_atomically(path, text)
        sidecar["input"] = {**sidecar["input"], f"{Path(name).stem}_file": path.name}
    path = destination.with_name(destination.name + ".json")
    replace_atomically(path, json.dumps(sidecar, indent=2) + "\n")
    return path


def replace_atomically(path: Path, text: str) -> None:
    with staged(path) as staging:
        staging.write_text(text, encoding="utf-8")


@contextmanager
def staged(destination: Path) -> Iterator[Path]:
    """A temporary file beside `destination`, renamed onto it when the block succeeds and
    deleted when it fails."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp",
                                    dir=destination.parent)  # fmt: skip
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o666 & ~umask)  # mkstemp makes owner-only files
        os.replace(staging, destination)
    finally:
        staging.unlink(missing_ok=True)
